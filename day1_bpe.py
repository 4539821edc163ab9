"""Day 1, continued: byte-pair encoding (BPE), the tokenizer of GPT-2 and most models since.

Run from the repo root:  python3 day1_bpe.py

It trains bpe.py's readable BPE on a slice of tiny Shakespeare and of the poems, prints the first
merges it learns, splits a sentence into tokens, and compares vocabulary sizes: how many tokens a
text becomes against how big the embedding table gets. Read bpe.py beside it.
"""

import bpe
from cli import run_main
from utils import REPO_DIR, CharTokenizer, read_text, train_val_split

ENGLISH_SLICE = 100_000  # characters the readable trainer learns from: a few seconds each
CHINESE_SLICE = 30_000
MERGES = 40  # merges the readable trainer learns in experiments 1 and 2
SIZES = (512, 2048, 8192)  # experiment 4's vocabularies (with the tokenizers library; 512 and 1024 without it)
N_EMBD = 128  # config.py's width: each token's row in the embedding table has this many numbers


def readable(token_bytes):
    """A token as a learner reads it: its text, spaces and newlines made visible; or, when it is only part of a
    character, its bytes in hex."""
    try:
        return token_bytes.decode("utf-8").replace(" ", "␣").replace("\n", "\\n")
    except UnicodeDecodeError:
        return bpe.hex_bytes(token_bytes)


def shown(token_bytes):
    """readable(), in 「」 when it is text."""
    try:
        token_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return "字节 " + " ".join(f"{b:02x}" for b in token_bytes)
    return "「" + readable(token_bytes) + "」"


def first_merges(tokenizer, count):
    for k, (a, b) in enumerate(tokenizer.merges[:count]):
        left, right, new = (tokenizer.token_bytes[i] for i in (a, b, bpe.N_BYTES + k))
        print(f"  第 {k + 1:2d} 次合并：{shown(left)} + {shown(right)} → {shown(new)}（新 token 编号 {bpe.N_BYTES + k}）")


def split_sentence(tokenizer, sentence):
    ids = tokenizer.encode(sentence)
    pieces = " | ".join(readable(tokenizer.token_bytes[i]) for i in ids)
    print(f"  {sentence!r}：{len(sentence)} 个字符 → {len(ids)} 个 token")
    print(f"    {pieces}")
    print(f"    编号：{ids}")
    assert tokenizer.decode(ids) == sentence  # a round trip loses nothing


def main():
    shakespeare = read_text(REPO_DIR / "data" / "input.txt")
    poems = read_text(REPO_DIR / "data" / "chinese.txt")

    # ===== Experiment 1: BPE on English =====
    print("=" * 50)
    print("实验1：在莎士比亚上训练 BPE")
    print("=" * 50)
    print("BPE 从 256 种字节出发：任何文字先写成 UTF-8 字节，所以永远不会遇到“没见过的字符”。")
    print("然后反复做一件事：数出相邻两个 token 最常见的组合，把它合并成一个新 token。")
    print(f"用 bpe.py 里可读的实现，在前 {ENGLISH_SLICE:,} 个字符上学 {MERGES} 次合并……")
    english = bpe.BPETokenizer(bpe.train(shakespeare[:ENGLISH_SLICE], bpe.N_BYTES + MERGES))
    first_merges(english, 12)
    print("␣ 是空格：BPE 先按词切开（空格跟着后面的词），只在词的内部合并，所以第一批合并")
    print("都是英文里最常见的词的开头和字母组合（␣t、he），很快就拼出 ␣the 这样的整词。")

    # ===== Experiment 2: BPE on Chinese =====
    print("\n" + "=" * 50)
    print("实验2：在唐诗上训练 BPE")
    print("=" * 50)
    print("一个汉字在 UTF-8 里是 3 个字节，比如「月」是", " ".join(f"{b:02x}" for b in "月".encode("utf-8")))
    print(f"在前 {CHINESE_SLICE:,} 个字符上学 {MERGES} 次合并……")
    chinese = bpe.BPETokenizer(bpe.train(poems[:CHINESE_SLICE], bpe.N_BYTES + MERGES))
    first_merges(chinese, 12)
    print("每句诗都有逗号和句号，它们最先被拼完整；接着合并的是很多汉字共用的开头两个字节：")
    print("编号相差不到 64、落在同一小段里的字，UTF-8 的前两个字节相同（不是整个 Unicode 区块：「不」是 e4 b8 8d，")
    print("「月」是 e6 9c 88），这一对比任何一个完整的字都常见。")
    hanzi = [k for k in range(len(chinese.merges))
             if any("\u4e00" <= ch <= "\u9fff" for ch in chinese.token_bytes[bpe.N_BYTES + k].decode("utf-8", "ignore"))]
    if hanzi:
        k = hanzi[0]
        print(f"第 {k + 1} 次合并才拼出第一个完整的汉字 {shown(chinese.token_bytes[bpe.N_BYTES + k])}。")
    else:
        print(f"{MERGES} 次合并里还没有一个完整的汉字：五千多种字分摊了出现次数，要很多次合并才轮到单个的字。")

    # ===== Experiment 3: a sentence as tokens =====
    print("\n" + "=" * 50)
    print("实验3：一句话被切成哪些 token")
    print("=" * 50)
    split_sentence(english, "To be, or not to be: that is the question.")
    split_sentence(chinese, "床前明月光，疑是地上霜。")
    print("常见的词和字整块出现，少见的被拆成更小的片段，最坏也能拆成单个字节：什么都能编码。")
    print("（只有半个字的 token 用 <十六进制字节> 表示。）")

    # ===== Experiment 4: vocabulary size =====
    print("\n" + "=" * 50)
    print("实验4：词汇表大小的取舍")
    print("=" * 50)
    try:
        bpe.train_fast("x", bpe.N_BYTES)
        learn, sizes, where = bpe.train_fast, SIZES, "全部训练集（用 tokenizers 库，结果和可读版相同，只是快得多）"
    except ImportError:
        learn, sizes, where = bpe.train, (512, 1024), f"前 {ENGLISH_SLICE:,} 个字符（没装 tokenizers 库，用可读版，慢）"
        print("没装 tokenizers 库，所以这个实验用可读版、只学 512 和 1024：要看 8192（思考题 2），先运行")
        print("python3 -m pip install -r requirements-hf.txt，再重新运行本脚本（装上以后只要几秒）。")
    print(f"在{where}上学 BPE，在验证集（最后 10%）上数 token：")
    block = 256
    for name, text in (("莎士比亚", shakespeare), ("唐诗", poems)):
        train_text, val_text = train_val_split(text)
        if learn is bpe.train:
            train_text = train_text[:ENGLISH_SLICE]
        chars = CharTokenizer(text).vocab_size
        print(f"\n  {name}（字符级词汇表 {chars:,} 个字符）")
        print(f"  {'分词器':<10}{'词汇表':>8}{'每字符 token 数':>14}{'256 个 token 覆盖':>16}{'Embedding 表参数':>16}")
        print(f"  {'字符级':<10}{chars:>10,}{1.0:>16.2f}{block:>14,} 字{chars * N_EMBD:>18,}")
        for size in sizes:
            tokenizer = bpe.BPETokenizer(learn(train_text, size))
            per_char = len(tokenizer.encode_array(val_text)) / len(val_text)
            print(f"  {'BPE':<10}{size:>10,}{per_char:>16.2f}{block / per_char:>14,.0f} 字{size * N_EMBD:>18,}")
    print("\n词汇表越大，同一段文字的 token 越少：同样 256 个位置的上下文能看到更多的字，")
    print("训练一步也学到更多的字；代价是 Embedding 表和输出层按词汇表大小变大，算得更慢，")
    print("而且每个 token 出现的次数变少，更难学好。英文只有 65 种字符，BPE 能把常见词压成一个 token；")
    print("唐诗有五千多种字，小的 BPE 词汇表反而把一个字拆成几个字节，比字符级还长。")
    print("哪个更好要看同样时间里每个字符的比特数（bits per character），train.py 每次训练都会算它：")
    print("  python3 train.py --tokenizer bpe --vocab_size 512")

    print("\n" + "=" * 50)
    print("思考题")
    print("=" * 50)
    print("1. 为什么唐诗的前几次合并拼出来的不是完整的字？")
    print("2. 词汇表从 512 加到 8192，莎士比亚每个字符的 token 数降了多少？Embedding 表大了多少？")
    print("3. 两个模型用不同的分词器，为什么不能直接比较它们的 loss？（提示：loss 是每个 token 的）")


if __name__ == "__main__":
    run_main(main)
