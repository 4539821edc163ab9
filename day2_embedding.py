"""Day 2: embeddings. Token ids -> vectors, plus position vectors.

Run from the repo root:  python3 day2_embedding.py   (saves day2_embeddings.png)
"""

import torch
import torch.nn as nn

from cli import run_main
from plots import pyplot
from utils import set_seed


def main():
    set_seed(0)  # the embeddings start random; a fixed seed makes every run print the same numbers

    print("=" * 50)
    print("实验1：Token Embedding 基础")
    print("=" * 50)
    vocab_size = 10  # 10 different tokens
    embed_dim = 4  # each token becomes a vector of 4 numbers
    embedding = nn.Embedding(vocab_size, embed_dim)
    print(f"Embedding 矩阵形状：{tuple(embedding.weight.shape)}")
    print(f"这是一个 {vocab_size} × {embed_dim} 的矩阵：第 i 行就是 token i 的向量\n")

    with torch.no_grad():  # we only look at the vectors here, nothing is trained
        vec_0 = embedding(torch.tensor([0]))  # (1, embed_dim)
        print(f"Token 0 的向量：{vec_0.squeeze().numpy()}")
        tokens = torch.tensor([0, 1, 2, 0])  # a sequence of 4 token ids
        vecs = embedding(tokens)  # (4, embed_dim)
        print(f"\n序列 {tokens.tolist()} 的向量矩阵形状：{tuple(vecs.shape)}")
        print(f"这表示 {len(tokens)} 个 token，每个用 {embed_dim} 维向量表示")
        print(f"同一个 token 总是得到同一个向量：第1个和第4个相同 → {'是 ✓' if torch.equal(vecs[0], vecs[3]) else '否 ✗'}")

        print("\n" + "=" * 50)
        print("实验2：相似度计算")
        print("=" * 50)
        vec_0 = embedding.weight[0]  # (embed_dim,)
        vec_1 = embedding.weight[1]
        cos_sim = torch.cosine_similarity(vec_0, vec_1, dim=0)
        print(f"Token 0 和 Token 1 的余弦相似度：{cos_sim.item():.4f}")
        print("相似度越接近1，表示越相似。现在的向量是随机的，训练后意思相近的 token 会靠得更近。")

        print("\n" + "=" * 50)
        print("实验3：Position Embedding")
        print("=" * 50)
        max_len = 8
        pos_embedding = nn.Embedding(max_len, embed_dim)
        pos_vecs = pos_embedding(torch.arange(max_len))  # (max_len, embed_dim)
        print(f"{max_len}个位置的编码矩阵形状：{tuple(pos_vecs.shape)}")
        print(f"\n位置0的向量：{pos_vecs[0].numpy()}")
        print(f"位置1的向量：{pos_vecs[1].numpy()}")
        print("注意力本身不知道顺序，位置向量告诉模型每个 token 在第几个位置。")

        print("\n" + "=" * 50)
        print("实验4：完整输入 = Token + Position")
        print("=" * 50)
        sequence = torch.tensor([3, 1, 4, 1])
        seq_len = len(sequence)
        token_emb = embedding(sequence)  # (T, embed_dim)
        print(f"Token embeddings 形状：{tuple(token_emb.shape)}")
        pos_emb = pos_embedding(torch.arange(seq_len))  # (T, embed_dim)
        print(f"Position embeddings 形状：{tuple(pos_emb.shape)}")
        final_input = token_emb + pos_emb  # (T, embed_dim)
        print(f"最终输入形状：{tuple(final_input.shape)}")
        print("token 1 出现了两次（位置1和位置3），加上位置向量后它们不再相同：")
        print(f"  位置1：{final_input[1].numpy()}")
        print(f"  位置3：{final_input[3].numpy()}")
        print("\n这就是输入到 Transformer 的数据！")

    plt = pyplot(chinese=True)
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4))
    panels = [(token_emb, "词元嵌入（token embedding）"), (pos_emb, "位置嵌入（position embedding）"),
              (final_input, "最终输入 = 词元 + 位置")]
    for ax, (matrix, title) in zip(axes, panels):
        image = ax.imshow(matrix.numpy(), aspect="auto", cmap="coolwarm")
        ax.set_title(title)
        ax.set_xlabel("嵌入维度")
        ax.set_yticks(range(seq_len), [f"位置 {i}：词元 {t}" for i, t in enumerate(sequence.tolist())])
        fig.colorbar(image, ax=ax)
    axes[0].set_ylabel("序列中的位置")
    fig.tight_layout()
    fig.savefig("day2_embeddings.png", dpi=120)
    plt.close(fig)
    print("\n✓ 可视化已保存到 day2_embeddings.png")


if __name__ == "__main__":
    run_main(main)
