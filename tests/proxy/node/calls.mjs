// One plain and one streamed chat completion with the real `openai` package, against
// BASE_URL (the proxy or the fake upstream); prints what came back as one JSON object.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, maxRetries: 0 });
const messages = [{ role: "user", content: "hello proxy world" }];

const plain = await client.chat.completions.create({ model: "fake-model", messages });
const stream = await client.chat.completions.create({
  model: "fake-model",
  messages,
  stream: true,
});
const streamed = [];
const chunks = [];
for await (const chunk of stream) {
  chunks.push(chunk);
  const delta = chunk.choices[0]?.delta?.content;
  if (delta) streamed.push(delta);
}
process.stdout.write(JSON.stringify({ plain, streamed, chunks }));
