"""Day 1: the character tokenizer. Text -> numbers -> text.

Run from the repo root:  python3 day1_tokenizer.py
"""

from cli import run_main
from utils import REPO_DIR, CharTokenizer, read_text


def main():
    # ===== Experiment 1: a tokenizer on English text =====
    text = "hello world"
    print("=" * 50)
    print("实验1：英文分词器")
    print("=" * 50)
    print(f"原始文本：{text}")

    tokenizer = CharTokenizer(text)
    print(f"\n词汇表大小：{tokenizer.vocab_size}")
    print(f"所有字符：{sorted(tokenizer.stoi.keys())}")
    print("\n字符→数字映射（stoi）：")
    for char, idx in sorted(tokenizer.stoi.items()):
        print(f"  {char!r} → {idx}")
    print("\n数字→字符映射（itos，stoi 反过来）：")
    for idx, char in sorted(tokenizer.itos.items()):
        print(f"  {idx} → {char!r}")

    test_word = "hello"
    encoded = tokenizer.encode(test_word)
    print(f"\n编码 '{test_word}'：{encoded}")
    decoded = tokenizer.decode(encoded)
    print(f"解码回来 (itos)：'{decoded}'")
    print("\n验证：解码结果和原文一致 ✓" if test_word == decoded else "\n✗ 错误！编码再解码没有得到原文")

    # ===== Experiment 2: mixed Chinese and English =====
    print("\n" + "=" * 50)
    print("实验2：中英文混合")
    print("=" * 50)
    mixed_text = "Hello 你好"
    tokenizer2 = CharTokenizer(mixed_text)
    print(f"原始文本：{mixed_text}")
    print(f"词汇表大小：{tokenizer2.vocab_size}")
    print(f"字符集：{sorted(tokenizer2.stoi.keys())}")
    encoded_mixed = tokenizer2.encode(mixed_text)
    print(f"\n编码：{encoded_mixed}")
    print(f"解码：'{tokenizer2.decode(encoded_mixed)}'")
    print("每个汉字都是一个独立的 token。这句话太短，看不出词汇表的差别；用仓库里的真实数据比一比：")
    english = set(read_text(REPO_DIR / "data" / "input.txt"))
    chinese = set(read_text(REPO_DIR / "data" / "chinese.txt"))
    print(f"  莎士比亚（英文）：{len(english):,} 种字符")
    print(f"  唐诗（中文）：{len(chinese):,} 种字符")
    print(f"  两份合在一起：{len(english | chinese):,} 种字符（两边共有的只有 {len(english & chinese)} 种）")
    print("英文只要大小写字母、数字和标点，不到一百种；中文每个字都是一种，常用的就有几千个。")
    print("混合文本的词汇表是两边字符的并集，所以一掺进中文就大了好几十倍。")

    # ===== Experiment 3: statistics of the real data set =====
    print("\n" + "=" * 50)
    print("实验3：数据集统计")
    print("=" * 50)
    shakespeare = read_text(REPO_DIR / "data" / "input.txt")
    print(f"莎士比亚文本长度：{len(shakespeare):,} 字符")
    tokenizer3 = CharTokenizer(shakespeare)
    print(f"唯一字符数：{tokenizer3.vocab_size}")
    print(f"前100个字符：{shakespeare[:100]}")
    sample = shakespeare[:10]
    sample_encoded = tokenizer3.encode(sample)
    print(f"\n样本：{sample!r}")
    print(f"编码：{sample_encoded}")
    print(f"解码：{tokenizer3.decode(sample_encoded)!r}")

    # ===== Experiment 4: a character never seen in training (question 3 below) =====
    print("\n" + "=" * 50)
    print("实验4：遇到训练时没见过的字符")
    print("=" * 50)
    print(f"第一个分词器只见过 {sorted(tokenizer.stoi.keys())}")
    print("尝试 tokenizer.encode(\"xyz123\") ...")
    try:
        tokenizer.encode("xyz123")
    except ValueError:
        unknown = sorted(set("xyz123") - set(tokenizer.stoi))
        print(f"出错了（ValueError）：{'、'.join(unknown)} 这 {len(unknown)} 个字符不在词汇表里，没有编号，无法编码。")
    print("分词器只认识训练文本里出现过的字符。真实项目常用的办法：留一个表示“未知”的特殊 token，")
    print("或者改用字节级分词（任何文字都能拆成 256 种字节之一）。")

    print("\n" + "=" * 50)
    print("思考题（记在笔记本上）")
    print("=" * 50)
    print("1. 词汇表大小对什么有影响？（提示：Embedding 表的行数、输出层的大小、每个 token 的信息量）")
    print("2. 为什么中文字符和英文字符混合时词汇表会变大？")
    print("3. 如果遇到训练时没见过的字符会怎样？（看实验4）")


if __name__ == "__main__":
    run_main(main)
