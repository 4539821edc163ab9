// The official OpenAI Node SDK against the playground's API, as a JavaScript user drives it.
// node client.mjs BASE_URL PASSAGE  ->  one line of JSON with what each call returned (tests/test_playground.py checks it)
import OpenAI from "openai";

const [baseURL, passage] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
const out = {};

const completion = await client.completions.create({ model: "m", prompt: "问：", max_tokens: 8, temperature: 0 });
out.completion = { text: completion.choices[0].text, finish: completion.choices[0].finish_reason,
                   usage: completion.usage };

const stream = await client.completions.create({ model: "m", prompt: "问：", max_tokens: 8, temperature: 0,
                                                 stream: true, stream_options: { include_usage: true } });
const pieces = [];
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) pieces.push(chunk.choices[0].text);
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { text: pieces.join(""), usage };

const question = [{ role: "user", content: "12+34等于多少？" }];
const free = await client.chat.completions.create({ model: "m", messages: question, max_tokens: 40, temperature: 0 });
const capped = await client.chat.completions.create({ model: "m", messages: question, max_completion_tokens: 2,
                                                      temperature: 0 });
const answer = free.choices[0].message.content;
const stopped = await client.chat.completions.create({ model: "m", messages: question, max_tokens: 40,
                                                       temperature: 0, stop: [answer.at(-1) ?? "\n"] });
out.chat = { answer, free_finish: free.choices[0].finish_reason, capped: capped.choices[0].message.content,
             stopped: stopped.choices[0].message.content, stop_finish: stopped.choices[0].finish_reason };

// What LangChain's message classes and most UIs send: content as a list of parts; and a conversation.
const parts = await client.chat.completions.create({ model: "m", max_tokens: 40, temperature: 0, messages: [
  { role: "user", content: [{ type: "text", text: "12+34" }, { type: "text", text: "等于多少？" }] }] });
const turns = await client.chat.completions.create({ model: "m", max_tokens: 40, temperature: 0, messages: [
  { role: "system", content: "Answer briefly." }, { role: "user", content: "1+1等于多少？" },
  { role: "assistant", content: "2" }, { role: "user", content: "12+34等于多少？" }] });
out.parts = parts.choices[0].message.content;
out.turns = { answer: turns.choices[0].message.content, prompt_tokens: turns.usage.prompt_tokens };

const scored = await client.completions.create({ model: "m", prompt: passage, max_tokens: 0, echo: true,
                                                 logprobs: 1 });
out.score = scored.choices[0].logprobs;

try {
  await client.completions.create({ model: "m", prompt: "问", temperature: -1 });
  out.error = null;
} catch (error) {
  out.error = { status: error.status, type: error.type, param: error.param, message: error.message };
}
console.log(JSON.stringify(out));
