"""Day 3: self-attention computed by hand, step by step, then with the model's `Head`.

Run from the repo root:  python3 day3_attention.py   (saves day3_attention.png)
"""

import torch
import torch.nn.functional as F

from cli import run_main
from model import Head
from plots import pyplot
from utils import set_seed


def main():
    torch.set_printoptions(precision=4, sci_mode=False)
    print("=" * 60)
    print("手把手理解注意力机制")
    print("=" * 60)

    # ===== Part 1: the simplest example =====
    print("\n【第1步】创建一个简单的序列")
    print("-" * 60)
    sequence = torch.tensor([
        [1.0, 0.0],  # word 1
        [0.0, 1.0],  # word 2
        [0.5, 0.5],  # word 3
    ])  # (T=3, C=2)
    print(f"序列形状：{tuple(sequence.shape)}")
    print("3个词，每个词2维\n")
    print("序列内容：")
    print(sequence)

    # ===== Part 2: Q, K, V =====
    print("\n【第2步】创建 Query, Key, Value")
    print("-" * 60)
    Q = sequence  # Query: "what am I looking for"
    K = sequence  # Key: "what do I contain"
    V = sequence  # Value: "what do I pass on"
    print("为了看清每一步，这里直接令 Q = K = V = sequence")
    print("(真实模型里 Q、K、V 由三个可学习的线性层从输入变换得到，见第6步)")

    # ===== Part 3: attention scores =====
    print("\n【第3步】计算注意力分数")
    print("-" * 60)
    scores = Q @ K.transpose(0, 1)  # (3, 2) @ (2, 3) -> (3, 3)
    print(f"注意力分数矩阵形状：{tuple(scores.shape)}")
    print("\n注意力分数 (Q @ K^T)：")
    print(scores)
    print("\n解释：scores[i][j] = 词i对词j的关注程度")
    d_k = Q.shape[-1]
    scores_scaled = scores / (d_k ** 0.5)
    print(f"\n缩放后 (除以 √{d_k}，防止维度大时分数过大、softmax 过于尖锐)：")
    print(scores_scaled)
    attention_weights = F.softmax(scores_scaled, dim=-1)  # (3, 3)
    print("\nSoftmax 后 (转换成概率)：")
    print(attention_weights)
    print("\n每一行的和：", attention_weights.sum(dim=-1))
    print("✓ 每行和为1，这就是概率分布！")

    # ===== Part 4: apply the weights to V =====
    print("\n【第4步】应用注意力到 Value")
    print("-" * 60)
    output = attention_weights @ V  # (3, 3) @ (3, 2) -> (3, 2)
    print(f"输出形状：{tuple(output.shape)}")
    print("\n输出：")
    print(output)
    print("\n这就是注意力的结果！每个词的输出 = 所有词的 Value 的加权平均")

    # ===== Part 5: the causal mask =====
    print("\n【第5步】因果掩码 (Causal Mask)")
    print("-" * 60)
    mask = torch.tril(torch.ones(3, 3))
    print("因果掩码 (下三角矩阵)：")
    print(mask)
    print("\n1表示可以看，0表示不能看（生成文字时，未来的字还不存在）")
    scores_masked = scores_scaled.masked_fill(mask == 0, float("-inf"))
    print("\n应用掩码后：")
    print(scores_masked)
    print("\n-inf 的位置在 softmax 后会变成0")
    attention_weights_masked = F.softmax(scores_masked, dim=-1)
    print("\nSoftmax 后：")
    print(attention_weights_masked)
    print("\n观察：")
    print("- 第1行：只能看自己")
    print("- 第2行：可以看前2个词")
    print("- 第3行：可以看所有3个词")

    plt = pyplot(chinese=True)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4))
    for ax, weights, title in [(axes[0], attention_weights, "注意力权重（不加掩码）"),
                               (axes[1], attention_weights_masked, "注意力权重（因果掩码：看不到未来）")]:
        image = ax.imshow(weights.numpy(), cmap="Blues", vmin=0, vmax=1)
        for i in range(3):
            for j in range(3):
                # Dark text on light cells, white on dark ones, so every number can be read.
                color = "white" if weights[i, j] > 0.55 else "black"
                ax.text(j, i, f"{weights[i, j]:.2f}", ha="center", va="center", color=color)
        ax.set_xticks(range(3), ["词 1", "词 2", "词 3"])  # one tick per cell, on its centre
        ax.set_yticks(range(3), ["词 1", "词 2", "词 3"])
        ax.set_title(title)
        ax.set_xlabel("被看的位置（key）")
        ax.set_ylabel("正在看的位置（query）")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig("day3_attention.png", dpi=120)
    plt.close(fig)
    print("\n✓ 可视化已保存到 day3_attention.png")

    # ===== Part 6: a real attention head =====
    print("\n" + "=" * 60)
    print("【第6步】用真实模型的注意力头 (model.Head)")
    print("=" * 60)
    set_seed(0)
    n_embd, head_size, block_size = 32, 8, 10
    head = Head(n_embd, head_size, block_size)
    x = torch.randn(1, 5, n_embd)  # (batch=1, seq_len=5, n_embd=32)
    print(f"\n输入形状：{tuple(x.shape)}")
    with torch.no_grad():
        out = head(x)  # (1, 5, head_size)
        print(f"输出形状：{tuple(out.shape)}  (每个位置得到一个 {head_size} 维的向量)")
        # The same six steps by hand, with the head's own linear layers:
        q, k, v = head.query(x), head.key(x), head.value(x)  # (1, 5, 8) each
        wei = q @ k.transpose(-2, -1) / head_size ** 0.5  # (1, 5, 5)
        wei = wei.masked_fill(torch.tril(torch.ones(5, 5)) == 0, float("-inf"))
        by_hand = F.softmax(wei, dim=-1) @ v  # (1, 5, 8)
    same = torch.allclose(out, by_hand, atol=1e-6)
    print(f"\n和手算结果一致：{'是 ✓' if same else '否 ✗'}")
    print("✓ 注意力头成功运行！")

    print("\n" + "=" * 60)
    print("总结")
    print("=" * 60)
    print("""
注意力机制的核心步骤：

1. 输入序列 → Q, K, V (通过线性变换)
2. 计算相似度：Q @ K^T
3. 缩放：/ √d_k
4. 应用掩码 (对于因果注意力)
5. Softmax：转换成概率
6. 加权求和：@ V
7. 输出结果

关键理解：
- 注意力就是"加权平均"
- 权重来自相似度计算
- 因果掩码防止看到未来
""")


if __name__ == "__main__":
    run_main(main)
