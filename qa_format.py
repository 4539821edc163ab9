"""The Q&A text format of advanced project 2, in one place: how prepare_qa_data.py writes an example,
and how chat.py, eval_qa.py and the playground ask a question.

    问：37+58等于多少？
    答：95
    <blank line>

With --loss_on answers, train.py trains no prediction inside a question (question_mask): the model learns
to answer, not to ask.
"""

import re

import numpy as np

# How the README trains the Q&A model; prepare_qa_data.py, chat.py and eval_qa.py print it as the next step.
TRAIN_COMMAND = "python3 train.py --data data/qa.txt --out_dir out-qa --loss_on answers"

QUESTION, ANSWER, END = "问：", "答：", "\n\n"  # END: the blank line after an answer, where generation stops
# A question: 问： at the start of the text or after a blank line, to the 答： that starts its answer
QUESTION_PATTERN = re.compile(f"(?:^|(?<={END})){QUESTION}[^\n]*\n{ANSWER}")


def example(question, answer):
    return f"{QUESTION}{question}\n{ANSWER}{answer}{END}"


def prompt(question):
    """What the model sees before it answers."""
    return f"{QUESTION}{question}\n{ANSWER}"


def looks_like_qa(tokenizer, data):
    """Whether a checkpoint is a Q&A model: its vocabulary has 问 and 答, and its data file's name says qa."""
    return not tokenizer.unknown(QUESTION[0] + ANSWER[0]) and "qa" in str(data or "").lower()


def question_mask(text):
    """For each character of text, whether it is part of a question (问：... up to and including 答：)."""
    mask = np.zeros(len(text), dtype=bool)
    for match in QUESTION_PATTERN.finditer(text):
        mask[match.start() : match.end()] = True
    return mask
