"""Text from a model, a piece at a time: a stop string that is never shown (StopText), and one sample
written as it comes (sample_text). generate.py, chat.py, eval_qa.py and the playground all use them."""


class StopText:
    """Text that arrives a piece at a time, released only once it can no longer turn out to be the
    start of a stop string, so that a stop string itself is never shown.

    add(piece) returns the text that is now safe to show (maybe ""); `stopped` turns true once a stop
    string appears (the text is cut before it); rest() returns what is still held back.
    """

    def __init__(self, stops=()):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # the longest unfinished stop string
        self.text, self.sent, self.stopped = "", 0, False

    def add(self, piece):
        start = len(self.text)
        self.text += piece
        # New characters can only complete a stop string that ends among them: search just there.
        hits = [i for s in self.stops if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
            return self.rest()
        ready = len(self.text) - self.hold
        if ready <= self.sent:
            return ""
        released, self.sent = self.text[self.sent : ready], ready
        return released

    def rest(self):
        released, self.sent = self.text[self.sent :], len(self.text)
        return released


def sample_text(model, tokenizer, context, write, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                stop=None, stream=False, use_cache=True):
    """Generate one sample after context (1, T); write(text) receives it piece by piece.

    With a stop string, text is held back until it cannot be the start of the stop string any more,
    so the stop string itself is never written. stream=False writes everything at the end.
    Returns the number of new tokens generated.
    """
    text = StopText([stop] if stop else [])
    decoder = tokenizer.decoder()  # a BPE token may end inside a character: that part waits for the next token
    held, count = [], 0  # without stream, everything is written at the end
    tokens = model.generate_stream(context, max_new_tokens, temperature, top_k, top_p, use_cache=use_cache)
    for token in tokens:
        count += 1
        piece = text.add(decoder.decode(token[0].tolist()))
        if stream:
            write(piece)
        else:
            held.append(piece)
        if text.stopped:
            break
    tokens.close()  # a character left unfinished by the last token is dropped: never half a character
    write("".join(held) + text.rest())
    return count
