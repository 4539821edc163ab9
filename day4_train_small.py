"""Day 4: train a very small GPT on the first 10,000 characters of Shakespeare.

Run from the repo root:  python3 day4_train_small.py
Takes 7 to 12 seconds on a 2-core CPU; saves day4_training_curve.png and day4_model.pt.
train.py is the full-size version of this same loop.
"""

import argparse

import torch
from tqdm import tqdm

from checkpoint import make_checkpoint, save_checkpoint
from cli import run_main
from device import get_device
from model import GPTModel
from plots import plot_losses
from utils import REPO_DIR, CharTokenizer, estimate_loss, get_batch, read_text, set_seed, train_val_split


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Day 4: train a very small GPT in 7 to 12 seconds on a CPU.")
    parser.add_argument("--max_iters", type=int, default=500, help="training steps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    print("=" * 60)
    print("训练一个超小型模型（2 核 CPU 上 7–12 秒）")
    print("=" * 60)

    # ===== Settings: tiny, so results show up fast =====
    batch_size = 16
    block_size = 32
    max_iters = args.max_iters
    eval_interval = 100
    eval_iters = 20  # few batches per estimate: faster
    learning_rate = 1e-3
    n_embd = 64
    num_heads = 2
    n_layer = 2
    dropout = 0.1

    set_seed(1337)
    device = get_device(args.device)
    print(f"使用设备：{device}")

    # ===== Data =====
    text = read_text(REPO_DIR / "data" / "input.txt")[:10000]  # the first 10,000 characters: faster
    print(f"\n数据长度：{len(text)} 字符")
    tokenizer = CharTokenizer(text)
    vocab_size = tokenizer.vocab_size
    print(f"词汇表大小：{vocab_size}")
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)
    train_data, val_data = train_val_split(data, 0.9)
    print(f"训练集：{len(train_data)} tokens")
    print(f"验证集：{len(val_data)} tokens")

    # ===== Model and optimizer =====
    model = GPTModel(vocab_size=vocab_size, n_embd=n_embd, num_heads=num_heads,
                     n_layer=n_layer, block_size=block_size, dropout=dropout).to(device)
    n_params = model.num_params()
    print(f"\n模型参数：{n_params:,}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)

    # ===== Training loop =====
    print("\n" + "=" * 60)
    print("开始训练")
    print("=" * 60)
    splits = {"train": train_data, "val": val_data}
    history = {"step": [], "train": [], "val": []}
    batch_generator = torch.Generator().manual_seed(1337)
    for step in tqdm(range(max_iters + 1), desc="训练中"):
        if step % eval_interval == 0 or step == max_iters:
            losses = estimate_loss(model, splits, eval_iters, batch_size, block_size, device)
            for name in ("train", "val"):
                history[name].append(losses[name])
            history["step"].append(step)
            # tqdm.write prints above the progress bar instead of breaking it
            tqdm.write(f"第 {step} 步：训练 loss {losses['train']:.4f}，验证 loss {losses['val']:.4f}")
        if step == max_iters:
            break
        xb, yb = get_batch(train_data, batch_size, block_size, device, batch_generator)  # (B, T) each
        _, loss = model(xb, yb)  # 1. forward: how wrong are the predictions?
        optimizer.zero_grad(set_to_none=True)  # 2. clear last step's gradients
        loss.backward()  # 3. backward: which way should each weight move?
        optimizer.step()  # 4. update the weights a little
    print("\n✓ 训练完成！")

    # ===== Sample (generate switches dropout off by itself) =====
    print("\n" + "=" * 60)
    print("生成样本文本")
    print("=" * 60)
    context = torch.zeros((1, 1), dtype=torch.long, device=device)  # start from token 0 ('\n')
    generated = model.generate(context, max_new_tokens=200, temperature=0.8, top_k=50)
    print("\n生成的文本：")
    print("-" * 60)
    print(tokenizer.decode(generated[0].tolist()))
    print("-" * 60)

    # ===== Loss curve =====
    plot_losses(history["step"], history["train"], history["val"], "day4_training_curve.png",
                title="第 4 天：训练过程", lang="zh")
    print("\n✓ Loss 曲线已保存到 day4_training_curve.png")

    # ===== Save the model (the tutorial's format; generate.py --checkpoint day4_model.pt reads it) =====
    sizes = {"n_embd": n_embd, "num_heads": num_heads, "n_layer": n_layer, "block_size": block_size}
    save_checkpoint(make_checkpoint(model, tokenizer, sizes), "day4_model.pt")
    print("✓ 模型已保存到 day4_model.pt")

    print("\n" + "=" * 60)
    print("实验总结")
    print("=" * 60)
    print(f"""
训练配置：
- 数据量：{len(text)} 字符
- 训练步数：{max_iters}
- 模型参数：{n_params:,}
- 最终训练 loss：{history['train'][-1]:.4f}
- 最终验证 loss：{history['val'][-1]:.4f}

观察：
1. Loss 是否下降？（起点约为 ln({vocab_size}) = {torch.log(torch.tensor(float(vocab_size))).item():.2f}，即随机猜）
2. 生成的文本是否有改善？
3. 训练 loss 和验证 loss 的关系？（验证 loss 跟着训练 loss 一起下降，说明模型学到的是规律，而不是死记硬背；
   验证 loss 略高是正常的，它是没训练过的文本。训练 loss 还在降、验证 loss 却回升，才是过拟合）

下一步：
1. 增加训练步数 (python3 day4_train_small.py --max_iters 2000)
2. 增加模型大小 (n_embd = 128, n_layer = 4)
3. 使用完整数据集: python3 train.py
""")


if __name__ == "__main__":
    run_main(main)
