// Mini-GPT in the browser: model.py's forward pass, written out in plain JavaScript.
//
// Put it beside model.py: the same steps under the same names. embed -> n_layer x Block (ln1, attention with a
// KV cache, ln2, feed-forward) -> ln_f -> lm_head (tied to the token embedding). Vectors are Float32Arrays of
// n_embd numbers (C); a Linear's weight is stored as PyTorch stores it, (out, in) row by row.
// export_web.py puts this file, the weights and the tokenizer into one HTML page: window.miniGPT.
"use strict";

const MiniGPT = (() => {

  // ------------------------------------------------------------------------------------------------
  // The weights: base64 bytes in the page -> Float32Arrays, by name (model.py's state_dict names)

  function float16ToFloat32(h) {  // IEEE half -> float: sign, 5-bit exponent, 10-bit fraction
    const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);  // subnormal
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }

  function loadWeights(base64, tensors, dtype) {
    const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
    const weights = {};
    for (const [name, {offset, shape}] of Object.entries(tensors)) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (dtype === "fp32") {
        weights[name] = new Float32Array(bytes.buffer.slice(offset, offset + 4 * n));
      } else {
        const halves = new Uint16Array(bytes.buffer.slice(offset, offset + 2 * n));
        weights[name] = Float32Array.from(halves, float16ToFloat32);
      }
    }
    return weights;
  }

  // ------------------------------------------------------------------------------------------------
  // The steps of the network

  function linear(x, weight, bias, outSize) {  // (in,) -> (out,): y = W x + b
    const inSize = x.length, y = new Float32Array(outSize);
    for (let o = 0; o < outSize; o++) y[o] = (bias ? bias[o] : 0) + dot(x, weight, o * inSize, inSize);
    return y;
  }

  function dot(x, w, at, n) {  // x[0..n) . w[at..at+n), in four running sums (the CPU overlaps them)
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
    for (; i + 3 < n; i += 4) {
      s0 += w[at + i] * x[i];
      s1 += w[at + i + 1] * x[i + 1];
      s2 += w[at + i + 2] * x[i + 2];
      s3 += w[at + i + 3] * x[i + 3];
    }
    for (; i < n; i++) s0 += w[at + i] * x[i];
    return (s0 + s1) + (s2 + s3);
  }

  function layerNorm(x, weight, bias) {  // (C,) -> (C,): mean 0, variance 1, then a learned scale and shift
    const C = x.length;
    let mean = 0, variance = 0;
    for (let i = 0; i < C; i++) mean += x[i];
    mean /= C;
    for (let i = 0; i < C; i++) variance += (x[i] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / C + 1e-5);  // nn.LayerNorm's eps
    const y = new Float32Array(C);
    for (let i = 0; i < C; i++) y[i] = (x[i] - mean) * scale * weight[i] + bias[i];
    return y;
  }

  function erf(x) {  // Abramowitz & Stegun 7.1.26, error below 1.5e-7: JavaScript has no Math.erf
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) *
      t * Math.exp(-x * x);
    return x >= 0 ? y : -y;
  }

  function gelu(x) {  // nn.GELU(): x times the chance that a standard normal is below x
    for (let i = 0; i < x.length; i++) x[i] = 0.5 * x[i] * (1 + erf(x[i] / Math.SQRT2));
    return x;
  }

  function rmsNorm(x) {  // qk_norm: scale to root-mean-square 1 (F.rms_norm's eps: float32's)
    let sum = 0;
    for (const v of x) sum += v * v;
    const scale = 1 / Math.sqrt(sum / x.length + 1.1920928955078125e-7);
    return x.map(v => v * scale);
  }

  function rotate(x, position) {  // RoPE: turn each pair (x[j], x[j + hs/2]) by the angle position * base^(-j/half)
    const half = x.length / 2, y = new Float32Array(x.length);
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(position * Math.fround(10000 ** -(j / half)));
      const c = Math.cos(angle), s = Math.sin(angle);
      y[j] = x[j] * c - x[j + half] * s;
      y[j + half] = x[j + half] * c + x[j] * s;
    }
    return y;
  }

  function softmax(scores) {  // the largest first subtracted, so exp never overflows
    const max = Math.max(...scores);
    const e = scores.map(s => Math.exp(s - max));
    const total = e.reduce((a, b) => a + b, 0);
    return e.map(v => v / total);
  }

  // ------------------------------------------------------------------------------------------------
  // The model

  class GPTModel {
    constructor(config, weights) {
      this.config = config;  // n_embd, num_heads, n_layer, block_size, vocab_size, position, qk_norm, head_bias
      this.w = weights;
      this.blockSize = config.block_size;
    }

    embed(token, position) {  // a token at a position -> (C,): its embedding (+ its position's, unless RoPE)
      const C = this.config.n_embd, x = this.w["token_embedding.weight"].slice(token * C, (token + 1) * C);
      if (this.config.position === "learned") {
        const table = this.w["position_embedding.weight"];
        for (let i = 0; i < C; i++) x[i] += table[position * C + i];
      }
      return x;
    }

    attention(layer, x, position, cache) {  // (C,) -> (C,): this token's queries against every cached key
      const {n_embd: C, num_heads: H} = this.config, hs = C / H, p = `blocks.${layer}.attn.`;
      const qkv = linear(x, this.w[p + "qkv.weight"], null, 3 * C);  // rows: every q, then every k, then every v
      const keys = cache.keys[layer], values = cache.values[layer];  // (block_size, C) each: position t at t * C
      const y = new Float32Array(C), T = position + 1, scores = new Float64Array(T);  // T: tokens so far
      for (let h = 0; h < H; h++) {
        let q = qkv.subarray(h * hs, (h + 1) * hs), k = qkv.subarray(C + h * hs, C + (h + 1) * hs);
        if (this.config.qk_norm) { q = rmsNorm(q); k = rmsNorm(k); }
        if (this.config.position === "rope") { q = rotate(q, position); k = rotate(k, position); }
        const row = (T - 1) * C + h * hs;  // this token's place in the cache
        keys.set(k, row);
        values.set(qkv.subarray(2 * C + h * hs, 2 * C + (h + 1) * hs), row);
        // Scores of this query against the keys up to itself (the cache holds nothing later: causal).
        const scale = 1 / Math.sqrt(hs), head = h * hs;
        let max = -Infinity;
        for (let t = 0; t < T; t++) {
          const s = dot(q, keys, t * C + head, hs) * scale;
          scores[t] = s;
          if (s > max) max = s;
        }
        let total = 0;
        for (let t = 0; t < T; t++) { scores[t] = Math.exp(scores[t] - max); total += scores[t]; }  // softmax
        const out = new Float64Array(hs);
        for (let t = 0; t < T; t++) {  // the weighted sum of the values
          const weight = scores[t] / total, at = t * C + head;
          let i = 0;
          for (; i + 1 < hs; i += 2) {  // two at a time
            out[i] += weight * values[at + i];
            out[i + 1] += weight * values[at + i + 1];
          }
          if (i < hs) out[i] += weight * values[at + i];
        }
        y.set(out, head);
      }
      return linear(y, this.w[p + "proj.weight"], this.w[p + "proj.bias"], C);
    }

    feedForward(layer, x) {  // (C,) -> 4C -> GELU -> (C,)
      const C = this.config.n_embd, p = `blocks.${layer}.ffwd.net.`;
      const hidden = gelu(linear(x, this.w[p + "0.weight"], this.w[p + "0.bias"], 4 * C));
      return linear(hidden, this.w[p + "2.weight"], this.w[p + "2.bias"], C);
    }

    block(layer, x, position, cache) {  // pre-LayerNorm residual block, as model.Block
      const p = `blocks.${layer}.`, w = this.w;
      const a = this.attention(layer, layerNorm(x, w[p + "ln1.weight"], w[p + "ln1.bias"]), position, cache);
      for (let i = 0; i < x.length; i++) x[i] += a[i];  // x + attention(ln1(x))
      const f = this.feedForward(layer, layerNorm(x, w[p + "ln2.weight"], w[p + "ln2.bias"]));
      for (let i = 0; i < x.length; i++) x[i] += f[i];  // x + feedForward(ln2(x))
      return x;
    }

    // One token in, the next token's logits (vocab_size,) out; its keys and values join the cache.
    forward(token, cache) {
      const position = cache.length;
      let x = this.embed(token, position);
      for (let layer = 0; layer < this.config.n_layer; layer++) x = this.block(layer, x, position, cache);
      cache.length += 1;
      x = layerNorm(x, this.w["ln_f.weight"], this.w["ln_f.bias"]);
      // The head is tied to the token embedding: a token's logit is its embedding's dot product with x.
      return linear(x, this.w["token_embedding.weight"], this.w["lm_head.bias"] || null, this.config.vocab_size);
    }

    // Per layer, the keys and values of the window's tokens so far: (block_size, C) each. Positions count from
    // the window's start, as in model.py, where a new window starts a new KVCache.
    newCache() {
      const {n_layer: L, n_embd: C} = this.config, size = this.blockSize * C;
      const buffers = () => Array.from({length: L}, () => new Float32Array(size));
      return {length: 0, keys: buffers(), values: buffers()};
    }

    // The logits after a whole window of tokens (at most block_size), read into a fresh cache one by one.
    prefill(tokens) {
      const cache = this.newCache();
      let logits = null;
      for (const token of tokens) logits = this.forward(token, cache);
      return {cache, logits};
    }
  }

  // Where the window begins when predicting token number `length`: model.window_start. A full window drops its
  // older half and starts again, so the cache is refilled once every block_size / 2 tokens, as generate.py does.
  function windowStart(length, blockSize, start) {
    if (start === null) return Math.max(0, length - blockSize);
    if (length - start > blockSize) return length - Math.max(1, Math.floor(blockSize / 2));
    return start;
  }

  // ------------------------------------------------------------------------------------------------
  // Choosing the next token: sampling.py's temperature, top-k and top-p

  function mulberry32(seed) {  // a small seeded random generator: the same seed, the same text
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function argmax(values) {  // the first of equal maxima, as torch.argmax
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  function sampleNext(logits, {temperature = 1, top_k = null, top_p = null}, random) {
    if (temperature === 0) return argmax(logits);  // greedy
    let scaled = Array.from(logits, v => v / temperature);
    if (top_k) {  // only the k most likely (clamped to the vocabulary)
      const kth = [...scaled].sort((a, b) => b - a)[Math.min(top_k, scaled.length) - 1];
      scaled = scaled.map(v => (v < kth ? -Infinity : v));
    }
    let probs = softmax(scaled);
    if (top_p !== null && top_p < 1) {  // nucleus: the fewest most likely whose probabilities reach top_p
      const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]);
      let before = 0;
      const kept = new Array(probs.length).fill(0);
      for (const i of order) {
        if (before >= top_p) break;  // the top token always stays
        kept[i] = probs[i];
        before += probs[i];
      }
      probs = kept.map(p => p / before);
    }
    let r = random(), i = 0;
    for (; i < probs.length - 1; i++) { r -= probs[i]; if (r < 0) break; }
    return i;
  }

  // ------------------------------------------------------------------------------------------------
  // Tokenizers: characters (day 1) or byte-level BPE (bpe.py)

  class CharTokenizer {
    constructor(itos) { this.itos = itos; this.stoi = new Map(itos.map((ch, i) => [ch, i])); }
    unknown(text) { return [...new Set([...text].filter(ch => !this.stoi.has(ch)))]; }
    encode(text) { return [...text].map(ch => this.stoi.get(ch)); }
    decoder() { return {decode: ids => ids.map(i => this.itos[i]).join("")}; }
  }

  // bpe.PATTERN in JavaScript: \w is Python's (letters, digits, _), \s Python's whitespace.
  const S = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
  const W = "\\p{L}\\p{N}_";
  const WORDS = new RegExp(` ?[${W}]+| ?[^${S}${W}]+|[${S}]+(?![^${S}])|[${S}]+`, "gu");

  class BPETokenizer {
    constructor(merges, byteOfId) {
      this.merges = merges;  // merge k makes token 256 + k
      this.ranks = new Map(merges.map(([a, b], k) => [`${a},${b}`, k]));  // which merge comes first
      this.idOfByte = new Map(byteOfId.map((b, i) => [b, i]));
      this.tokenBytes = byteOfId.map(b => [b]);
      for (const [a, b] of merges) this.tokenBytes.push([...this.tokenBytes[a], ...this.tokenBytes[b]]);
    }
    unknown() { return []; }  // bytes cover every text
    encodeWord(word) {  // UTF-8 bytes, then the earliest-learned merge again and again
      let ids = [...new TextEncoder().encode(word)].map(b => this.idOfByte.get(b));
      while (ids.length > 1) {
        let best = null;
        for (let i = 0; i + 1 < ids.length; i++) {
          const rank = this.ranks.get(`${ids[i]},${ids[i + 1]}`);
          if (rank !== undefined && (best === null || rank < best)) best = rank;
        }
        if (best === null) break;
        const [a, b] = this.merges[best], merged = [];
        for (let i = 0; i < ids.length; i++) {
          if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) { merged.push(256 + best); i++; }
          else merged.push(ids[i]);
        }
        ids = merged;
      }
      return ids;
    }
    encode(text) { return (text.match(WORDS) || []).flatMap(word => this.encodeWord(word)); }
    decoder() {  // a character split across tokens waits for its last byte, as bpe.StreamDecoder
      const utf8 = new TextDecoder("utf-8");
      return {decode: ids => utf8.decode(new Uint8Array(ids.flatMap(i => this.tokenBytes[i])), {stream: true})};
    }
  }

  // ------------------------------------------------------------------------------------------------
  // The console API: window.miniGPT.logits(text) and window.miniGPT.generate(text, options)

  // Give the page a moment to draw and to notice a click on Stop. A message, not setTimeout(0), which browsers
  // stretch to 4 ms when it repeats.
  function yieldToPage() {
    return new Promise(resolve => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => { channel.port1.close(); resolve(); };
      channel.port2.postMessage(null);
    });
  }

  function create(data) {
    const model = new GPTModel(data.config, loadWeights(data.weights, data.tensors, data.dtype));
    const tokenizer = data.tokenizer.kind === "bpe"
      ? new BPETokenizer(data.tokenizer.merges, data.tokenizer.byte_of_id)
      : new CharTokenizer(data.tokenizer.itos);

    function encode(text) {
      const unknown = tokenizer.unknown(text);
      if (unknown.length) throw new Error(`the model has never seen these characters: ${unknown.join(" ")}`);
      return tokenizer.encode(text);
    }

    // The next token's logits after text (its last block_size tokens), as an array of vocab_size numbers.
    function logits(text) {
      const ids = encode(text);
      if (!ids.length) throw new Error("give at least one character");
      return Array.from(model.prefill(ids.slice(-model.blockSize)).logits);
    }

    // Continue text; onPiece(text) gets each piece as it is made; stop() -> true ends it early.
    async function generate(text, options = {}, onPiece = () => {}, stop = () => false) {
      const {max_new_tokens = 200, seed = 1337} = options;
      const random = mulberry32(seed), decoder = tokenizer.decoder();
      let ids = encode(text), start = null, state = null, out = "", drawn = performance.now();
      if (!ids.length) throw new Error("give at least one character");
      for (let step = 0; step < max_new_tokens && !stop(); step++) {
        const newStart = windowStart(ids.length, model.blockSize, start);
        if (newStart !== start) {  // a new window: its positions changed, so the cache starts over
          start = newStart;
          state = model.prefill(ids.slice(start));
        } else {
          state.logits = model.forward(ids[ids.length - 1], state.cache);  // just the newest token
        }
        const next = sampleNext(state.logits, options, random);
        ids.push(next);
        const piece = decoder.decode([next]);
        out += piece;
        onPiece(piece, step + 1);
        if (performance.now() - drawn > 20) { await yieldToPage(); drawn = performance.now(); }  // let it draw
      }
      return out;
    }

    return {config: data.config, card: data.card, tokenizer, encode, logits, generate};
  }

  return {create, windowStart, sampleNext, erf};
})();
