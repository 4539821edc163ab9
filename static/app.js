// Mini-GPT playground: plain JavaScript, no build step, nothing loaded from the internet.
"use strict";

const TEXT = {
  en: {
    title: "Mini-GPT playground", checkpoint: "Checkpoint", tab_generate: "Generate", tab_attention: "Attention",
    tab_chat: "Chat", tab_card: "Model card", prompt: "Prompt", temperature: "Temperature", top_k: "Top-k (0 = off)",
    top_p: "Top-p", max_tokens: "Max tokens", seed: "Seed", kv_cache: "KV cache", generate: "Generate",
    probs_title: "Next-character probabilities", probs_hint: "Hover or tap a generated character.",
    layer: "Layer", head: "Head", show_attention: "Show attention",
    attention_hint: "Row = the character that is predicting; column = what it looks at. Click a character to see what it attends to.",
    chat_off: "This checkpoint is not a Q&A model. Train one with prepare_qa_data.py, then load it.",
    question: "Question", ask: "Ask", curves: "Training curves",
    speed: (n, s, r, cache) => `${n} tokens in ${s} s: ${r} tokens/s (${cache ? "KV cache on" : "no KV cache"})`,
    chosen: "chosen", step_of: (i, ch) => `Step ${i}: the model chose ${ch}`,
    vocab: "Vocabulary", params: "Parameters", data: "Trained on", steps: "Steps", best: "Best val loss", full: "Val loss, whole split",
    config: "Config", qa: "Q&A model", yes: "yes", no: "no", train_loss: "train loss", val_loss: "val loss",
    share: "Share it (Hugging Face transformers)",
    step: "step", no_history: "This checkpoint holds no training history.", no_text: "Generate or type some text first.",
    tab_surprise: "Surprise", surprise_text: "Text to score", score: "Score it", val_start: "The validation split's start",
    surprise_hint: "Each character is shaded by its surprise, −log₂ p: how many bits the model needed for it. Hover over a character for what the model expected there.",
    expected: "What the model expected", surprise_pick: "Hover or tap a character.",
    mean: (bpc, n) => `Mean: ${bpc} bits per character over ${n} characters, the number train.py's whole-split evaluation gives for this text.`,
    note_char: "A character-level model: one token per character. The first character is only context, so it has no score.",
    note_bpe: (n) => `A BPE model: this text is ${n} tokens. A token's bits are spread evenly over its characters (over its bytes, where a character is split between two tokens), so each character shows its share of its token's surprise. The first token is only context.`,
    char_bits: (ch, bits) => `${ch}: ${bits} bits`, token_of: (tok, bits, n) => `its token ${tok}: ${bits} bits over ${n} character(s)`,
    tokens_of: (parts) => `its bytes come from more than one token (bits): ${parts}`,
    context_only: "Only context: nothing comes before it, so the model did not predict it.", bits: "bits",
    full_bpc: "Bits per character, whole split",
  },
  zh: {
    title: "Mini-GPT 演练场", checkpoint: "检查点", tab_generate: "生成", tab_attention: "注意力", tab_chat: "问答",
    tab_card: "模型信息", prompt: "提示词", temperature: "温度 temperature", top_k: "Top-k（0 = 不限）",
    top_p: "Top-p", max_tokens: "最多生成字符数", seed: "随机种子", kv_cache: "KV cache", generate: "生成",
    probs_title: "下一个字符的概率", probs_hint: "把鼠标移到（或点一下）生成的字符上。",
    layer: "层", head: "头", show_attention: "显示注意力",
    attention_hint: "每一行是正在预测的字符，每一列是它看向的字符。点一个字符，看它关注哪些字符。",
    chat_off: "这个检查点不是问答模型。先用 prepare_qa_data.py 准备数据并训练，再加载它。",
    question: "问题", ask: "提问", curves: "训练曲线",
    speed: (n, s, r, cache) => `${n} 个字符，用时 ${s} 秒：每秒 ${r} 个（${cache ? "开启 KV cache" : "关闭 KV cache"}）`,
    chosen: "选中", step_of: (i, ch) => `第 ${i} 步：模型选了 ${ch}`,
    vocab: "词汇表大小", params: "参数量", data: "训练数据", steps: "训练步数", best: "最佳验证 loss", full: "整个验证集上的 loss",
    config: "配置", qa: "问答模型", yes: "是", no: "否", train_loss: "训练 loss", val_loss: "验证 loss",
    share: "分享出去（Hugging Face transformers）",
    step: "步数", no_history: "这个检查点没有训练记录。", no_text: "请先生成或输入一些文字。",
    tab_surprise: "意外度", surprise_text: "要打分的文字", score: "计算", val_start: "验证集的开头",
    surprise_hint: "每个字符按它的意外度 −log₂ p 着色：模型为它用了多少比特。把鼠标移到字符上，看模型在那里原本期待什么。",
    expected: "模型原本期待的", surprise_pick: "把鼠标移到（或点一下）一个字符上。",
    mean: (bpc, n) => `平均：每个字符 ${bpc} 比特（共 ${n} 个字符），和 train.py 在整个验证集上的评估对这段文字算出的数一样。`,
    note_char: "字符级模型：一个字符一个 token。第一个字符只是上下文，所以没有分数。",
    note_bpe: (n) => `BPE 模型：这段文字是 ${n} 个 token。一个 token 的比特数平均分给它的字符（一个字符被分在两个 token 里时，按字节分），所以每个字符显示的是它在所属 token 的意外度里占的份额。第一个 token 只是上下文。`,
    char_bits: (ch, bits) => `${ch}：${bits} 比特`, token_of: (tok, bits, n) => `所在 token ${tok}：${bits} 比特，分给 ${n} 个字符`,
    tokens_of: (parts) => `它的字节来自几个 token（比特）：${parts}`,
    context_only: "只是上下文：它前面没有字，模型没有预测它。", bits: "比特",
    full_bpc: "整个验证集上每个字符的比特数",
  },
};

const $ = (id) => document.getElementById(id);
let lang = localStorage.getItem("lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
let info = null;
let steps = [];  // per generated character: {char, chosen_prob, top}
let promptText = "";

function t(key, ...args) {
  const value = TEXT[lang][key];
  return typeof value === "function" ? value(...args) : value;
}

function show(text) {  // whitespace made visible, for labels: a character, or a BPE token's characters
  if (/^<[0-9a-f]{2}( [0-9a-f]{2})*>$/.test(text)) return text;  // part of a character: its bytes, <e6 b7>
  return [...text].map((ch) => ({ "\n": "\\n", " ": "␣", "\t": "\\t" }[ch] ?? ch)).join("");
}

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = lang === "zh" ? "English" : "中文";
  document.title = t("title");
  if (info) renderCard();
  if (surprise) drawSurprise();
}

function headers() {
  const key = localStorage.getItem("apiKey");
  return { "Content-Type": "application/json", "Accept-Language": lang === "zh" ? "zh-CN" : "en",  // errors in it
           ...(key ? { Authorization: `Bearer ${key}` } : {}) };
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (response.status === 401) {
    const key = window.prompt("API key");
    if (key) { localStorage.setItem("apiKey", key); return api(path, body); }
  }
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new Error(error.error?.message || `HTTP ${response.status}`);
  }
  return response;
}

async function* events(response) {  // server-sent events from a fetch response
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (line.startsWith("data: ") && line !== "data: [DONE]") yield JSON.parse(line.slice(6));
    }
  }
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

// ---------------------------------------------------------------- generate

async function generate() {
  showError("");
  $("go").disabled = true;
  promptText = $("prompt").value.replace(/\\n/g, "\n");
  steps = [];
  const output = $("output");
  output.innerHTML = "";
  const promptSpan = document.createElement("span");
  promptSpan.className = "prompt";
  promptSpan.textContent = promptText;
  output.appendChild(promptSpan);
  $("bars").innerHTML = "";
  $("speed").textContent = "";
  const topK = Number($("top_k").value);
  try {
    const response = await api("/api/generate", {
      prompt: promptText, temperature: Number($("temperature").value), top_k: topK > 0 ? topK : null,
      top_p: Number($("top_p").value), max_tokens: Number($("max_tokens").value),
      seed: $("seed").value === "" ? null : Number($("seed").value), use_cache: $("use_cache").checked,
    });
    for await (const event of events(response)) {
      if (event.done) {
        $("speed").textContent = t("speed", event.tokens, event.seconds, event.tokens_per_s, event.use_cache);
        break;
      }
      const span = document.createElement("span");
      span.className = "tok";
      span.textContent = event.char;
      span.dataset.index = steps.length;
      steps.push(event);
      output.appendChild(span);
    }
  } catch (error) {
    showError(error.message);
  } finally {
    $("go").disabled = false;
  }
}

function showProbs(index) {
  const step = steps[index];
  if (!step) return;
  document.querySelectorAll("#output .tok.selected").forEach((el) => el.classList.remove("selected"));
  document.querySelector(`#output .tok[data-index="${index}"]`)?.classList.add("selected");
  $("probs_hint").textContent = t("step_of", Number(index) + 1, show(step.char));
  const best = step.top.length ? step.top[0][1] : 1;
  const bars = $("bars");
  bars.innerHTML = "";
  for (const [ch, p] of step.top) {
    const row = document.createElement("div");
    row.className = "bar" + (ch === step.char ? " chosen" : "");
    row.dataset.char = ch;
    row.dataset.prob = p;
    row.innerHTML = `<span class="ch"></span><span class="fill" style="width:${(100 * p / best).toFixed(1)}%"></span><span class="p">${(100 * p).toFixed(1)}%</span>`;
    row.querySelector(".ch").textContent = show(ch);
    row.title = ch === step.char ? t("chosen") : "";
    bars.appendChild(row);
  }
}

// ---------------------------------------------------------------- attention

let attention = null;
let query = null;

async function showAttention() {
  const text = promptText + steps.map((s) => s.char).join("") || $("prompt").value.replace(/\\n/g, "\n");
  if (!text) { $("heatmap").textContent = t("no_text"); return; }
  try {
    const response = await api("/api/attention", { text });
    attention = await response.json();
    query = attention.chars.length - 1;
    drawAttention();
  } catch (error) {
    $("heatmap").textContent = error.message;
  }
}

function drawAttention() {
  if (!attention) return;
  const weights = attention.maps[Number($("layer").value)][Number($("head").value)];
  const chars = attention.chars;
  const T = chars.length;
  const cell = Math.max(6, Math.min(26, Math.floor(620 / T)));
  const pad = 30;
  const size = pad + T * cell;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${size + 2} ${size + 2}`);
  svg.setAttribute("width", size + 2);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      const rect = document.createElementNS(svgNS, "rect");
      const w = weights[i][j];
      rect.setAttribute("x", pad + j * cell);
      rect.setAttribute("y", pad + i * cell);
      rect.setAttribute("width", cell);
      rect.setAttribute("height", cell);
      rect.setAttribute("fill", `rgb(${Math.round(247 - 200 * w)}, ${Math.round(248 - 150 * w)}, ${Math.round(251 - 30 * w)})`);
      rect.setAttribute("class", "cell" + (i === query ? " row" : ""));
      rect.dataset.weight = w;
      const tip = document.createElementNS(svgNS, "title");
      tip.textContent = `${show(chars[i])} → ${show(chars[j])}: ${w.toFixed(3)}`;
      rect.appendChild(tip);
      rect.addEventListener("click", () => { query = i; drawAttention(); });
      svg.appendChild(rect);
    }
    if (cell >= 10) {
      for (const [x, y, anchor] of [[pad - 4, pad + i * cell + cell * 0.75, "end"], [pad + i * cell + cell / 2, pad - 6, "middle"]]) {
        const label = document.createElementNS(svgNS, "text");
        label.setAttribute("x", x);
        label.setAttribute("y", y);
        label.setAttribute("text-anchor", anchor);
        label.setAttribute("font-size", Math.min(14, cell * 0.75));
        label.textContent = show(chars[i]);
        svg.appendChild(label);
      }
    }
  }
  $("heatmap").innerHTML = "";
  $("heatmap").appendChild(svg);
  const strip = $("strip");
  strip.innerHTML = "";
  chars.forEach((ch, j) => {
    const span = document.createElement("span");
    span.textContent = ch;
    const w = j <= query ? weights[query][j] : 0;
    span.style.background = `rgba(245, 158, 11, ${Math.min(1, w * 1.5).toFixed(3)})`;
    if (j === query) span.className = "query";
    span.addEventListener("click", () => { query = j; drawAttention(); });
    strip.appendChild(span);
  });
}

// ---------------------------------------------------------------- surprise

let surprise = null;
const MAX_BITS = 10;  // the darkest shade: a character the model gave about 1 chance in 1,000

function shade(bits) {
  return bits == null ? "transparent" : `rgba(220, 38, 38, ${Math.min(1, bits / MAX_BITS).toFixed(3)})`;
}

async function scoreText() {
  const text = $("surprise_text").value;
  $("surprise_error").hidden = true;
  if (!text) { $("surprise_error").hidden = false; $("surprise_error").textContent = t("no_text"); return; }
  $("score").disabled = true;
  try {
    surprise = await (await api("/api/surprise", { text })).json();
    drawSurprise();
  } catch (error) {
    $("surprise_error").hidden = false;
    $("surprise_error").textContent = error.message;
  } finally {
    $("score").disabled = false;
  }
}

function drawSurprise() {
  if (!surprise) return;
  const out = $("surprise_out");
  out.innerHTML = "";
  surprise.chars.forEach((ch, i) => {
    const span = document.createElement("span");
    span.textContent = ch;
    span.dataset.index = i;
    const bits = surprise.char_bits[i];
    span.style.background = shade(bits);
    if (bits == null) span.className = "context";
    span.title = bits == null ? t("context_only") : t("char_bits", show(ch), bits.toFixed(2));
    span.dataset.bits = bits == null ? "" : bits;
    out.appendChild(span);
  });
  $("surprise_mean").textContent = surprise.mean_bits == null ? "" : t("mean", surprise.mean_bits.toFixed(4), surprise.scored_chars.toLocaleString());
  $("surprise_note").textContent = surprise.kind === "bpe" ? t("note_bpe", surprise.tokens.length.toLocaleString()) : t("note_char");
  const legend = $("legend");
  legend.innerHTML = `<span>${t("bits")}</span>`;
  for (const bits of [0, 2, 4, 6, 8, 10]) {
    legend.insertAdjacentHTML("beforeend", `<span class="swatch" style="background:${shade(bits)}"></span><span>${bits}${bits === MAX_BITS ? "+" : ""}</span>`);
  }
}

function pickChar(index) {
  if (!surprise || index === undefined) return;
  document.querySelectorAll("#surprise_out span.picked").forEach((el) => el.classList.remove("picked"));
  document.querySelector(`#surprise_out span[data-index="${index}"]`)?.classList.add("picked");
  const ch = surprise.chars[index], bits = surprise.char_bits[index];
  const token = surprise.tokens[surprise.char_token[index]];
  const bars = $("surprise_bars");
  bars.innerHTML = "";
  if (bits == null || !token.top) { $("surprise_pick").textContent = t("context_only"); return; }
  let line = t("char_bits", show(ch), bits.toFixed(2));
  if (surprise.kind === "bpe") {
    const from = surprise.char_tokens[index];
    if (from.length > 1) {  // its bytes come from two tokens: each gave it a share
      line += " — " + t("tokens_of", from.map((k) => `${show(surprise.tokens[k].text)} (${(surprise.tokens[k].bits ?? 0).toFixed(2)})`).join(" + "));
    } else {
      const n = surprise.char_token.filter((k) => k === surprise.char_token[index]).length;
      line += " — " + t("token_of", show(token.text), token.bits.toFixed(2), n);
    }
  }
  $("surprise_pick").textContent = line;
  const best = token.top.length ? token.top[0][1] : 1;
  for (const [text, p] of token.top) {
    const row = document.createElement("div");
    row.className = "bar" + (text === token.text ? " chosen" : "");
    row.innerHTML = `<span class="ch"></span><span class="fill" style="width:${(100 * p / best).toFixed(1)}%"></span><span class="p">${(100 * p).toFixed(1)}%</span>`;
    row.querySelector(".ch").textContent = show(text);
    bars.appendChild(row);
  }
}

async function validationStart() {
  $("surprise_error").hidden = true;
  try {
    const start = await (await api("/api/validation_start")).json();
    $("surprise_text").value = start.text;
    await scoreText();
  } catch (error) {
    $("surprise_error").hidden = false;
    $("surprise_error").textContent = error.message;
  }
}

// ---------------------------------------------------------------- chat

async function ask() {
  const question = $("question").value.trim();
  if (!question) return;
  const log = $("log");
  const q = document.createElement("div");
  q.className = "q";
  q.textContent = question;
  const a = document.createElement("div");
  a.className = "a";
  log.append(q, a);
  $("question").value = "";
  try {
    const response = await api("/api/chat", { text: question });
    for await (const event of events(response)) {
      if (event.done) break;
      a.textContent += event.text;
    }
  } catch (error) {
    a.textContent = error.message;
  }
}

// ---------------------------------------------------------------- model card

function renderCard() {
  const facts = [
    [t("vocab"), info.vocab_size.toLocaleString()], [t("params"), `${(info.parameters / 1e6).toFixed(2)}M`],
    [t("data"), info.data ?? "?"], [t("steps"), info.steps ?? "?"],
    [t("best"), info.best_val_loss != null && isFinite(info.best_val_loss) ? info.best_val_loss.toFixed(4) : "?"],
    [t("full"), info.full_val_loss != null ? info.full_val_loss.toFixed(4) : "?"],
    [t("full_bpc"), info.full_val_bpc != null ? info.full_val_bpc.toFixed(4) : "?"],
    [t("qa"), info.qa ? t("yes") : t("no")],
    [t("config"), Object.entries(info.config).map(([k, v]) => `${k} ${v}`).join(", ")],
    [t("share"), info.export_command],
  ];
  const table = $("facts");
  table.innerHTML = "";
  for (const [name, value] of facts) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = value;
  }
  drawCurve();
  $("chat_off").hidden = info.qa;
  $("ask").disabled = !info.qa;
}

function drawCurve() {
  const svg = $("curve");
  const rows = info.history;  // [step, seconds, lr, train loss, val loss]
  if (!rows.length) { svg.innerHTML = `<text x="20" y="40">${t("no_history")}</text>`; return; }
  const W = 640, H = 300, L = 50, B = 36, R = 110, top = 14;
  const maxStep = Math.max(1, ...rows.map((r) => r[0]));
  const losses = rows.flatMap((r) => [r[3], r[4]]);
  const lo = Math.min(...losses), hi = Math.max(...losses);
  const x = (s) => L + (W - L - R) * s / maxStep;
  const y = (v) => top + (H - top - B) * (hi - v) / Math.max(hi - lo, 1e-9);
  let out = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${top}" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  for (const v of [lo, (lo + hi) / 2, hi]) out += `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${v.toFixed(2)}</text>`;
  out += `<text x="${L}" y="${H - 10}" font-size="11">0</text><text x="${W - R}" y="${H - 10}" text-anchor="end" font-size="11">${maxStep} ${t("step")}</text>`;
  for (const [column, color, name] of [[3, "#2f6fde", t("train_loss")], [4, "#f59e0b", t("val_loss")]]) {
    out += `<polyline fill="none" stroke="${color}" stroke-width="2" points="${rows.map((r) => `${x(r[0]).toFixed(1)},${y(r[column]).toFixed(1)}`).join(" ")}"/>`;
    const last = rows[rows.length - 1];
    out += `<text x="${x(last[0]) + 6}" y="${y(last[column]) + 4}" font-size="12" fill="${color}">${name} ${last[column].toFixed(3)}</text>`;
  }
  svg.innerHTML = out;
}

function forgetResults() {  // another checkpoint: what the last one computed leaves the page
  attention = null;
  surprise = null;
  for (const id of ["heatmap", "surprise_out", "surprise_bars", "legend"]) $(id).replaceChildren();
  for (const id of ["surprise_mean", "surprise_note"]) $(id).textContent = "";
  $("surprise_pick").textContent = t("surprise_pick");
}

async function loadInfo() {
  info = await (await api("/api/info")).json();
  const picker = $("checkpoint");
  picker.innerHTML = "";
  const names = info.checkpoints.includes(info.checkpoint) ? info.checkpoints : [info.checkpoint, ...info.checkpoints];
  for (const name of names) picker.add(new Option(name, name, false, name === info.checkpoint || info.checkpoint.endsWith(name)));
  $("layer").innerHTML = "";
  $("head").innerHTML = "";
  for (let i = 0; i < info.layers; i++) $("layer").add(new Option(String(i), i));
  for (let i = 0; i < info.heads; i++) $("head").add(new Option(String(i), i));
  $("top_k").max = info.vocab_size;
  renderCard();
}

// ---------------------------------------------------------------- wiring

document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab, .panel").forEach((el) => el.classList.remove("active"));
  tab.classList.add("active");
  $(tab.dataset.tab).classList.add("active");
  if (tab.dataset.tab === "attention" && !attention && (steps.length || $("prompt").value)) showAttention();
}));
for (const id of ["temperature", "top_k", "top_p"]) {
  const update = () => { $(`${id}_out`).textContent = id === "top_k" && $(id).value === "0" ? "off" : $(id).value; };
  $(id).addEventListener("input", update);
  update();
}
$("go").addEventListener("click", generate);
$("output").addEventListener("mouseover", (e) => { if (e.target.dataset.index) showProbs(e.target.dataset.index); });
$("output").addEventListener("click", (e) => { if (e.target.dataset.index) showProbs(e.target.dataset.index); });
$("attend").addEventListener("click", showAttention);
$("layer").addEventListener("change", drawAttention);
$("head").addEventListener("change", drawAttention);
$("ask").addEventListener("click", ask);
$("score").addEventListener("click", scoreText);
$("val_start").addEventListener("click", validationStart);
$("surprise_out").addEventListener("mouseover", (e) => { if (e.target.dataset.index) pickChar(e.target.dataset.index); });
$("surprise_out").addEventListener("click", (e) => { if (e.target.dataset.index) pickChar(e.target.dataset.index); });
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter") ask(); });
$("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("lang", lang); applyLanguage(); });
$("checkpoint").addEventListener("change", async (e) => {
  try { await api("/api/load", { path: e.target.value }); forgetResults(); await loadInfo(); } catch (error) { showError(error.message); }
});
$("prompt").value = "\\n";
applyLanguage();
loadInfo().catch((error) => showError(error.message));
