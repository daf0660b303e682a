// One llama.cpp measurement (node-llama-cpp, CPU only): prefill and greedy decode on given prompt tokens.
//   node bench_llama.mjs MODEL.gguf TOKENS.json N_DECODE THREADS
// Prints one JSON line. Run by run.sh with NODE_PATH pointing at the cached node-llama-cpp install.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const [modelPath, tokensPath, nDecodeArg, threadsArg] = process.argv.slice(2);
const require = createRequire(process.env.NODE_LLAMA_CPP_DIR + "/package.json");
const { getLlama } = await import(require.resolve("node-llama-cpp"));
const prompt = JSON.parse(readFileSync(tokensPath, "utf8"));
const nDecode = Number(nDecodeArg);
const threads = Number(threadsArg);

const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 2048, threads, batchSize: 512 });
const sequence = context.getSequence();

// prefill = all prompt tokens but the last; decode = nDecode one-token steps from the last one
async function once() {
  sequence.clearHistory();
  const t0 = performance.now();
  await sequence.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
  const t1 = performance.now();
  const out = [];
  for await (const token of sequence.evaluate(prompt.slice(-1), { temperature: 0 })) {
    out.push(token);
    if (out.length >= nDecode) break;
  }
  const t2 = performance.now();
  return { prefill_tps: (prompt.length - 1) / ((t1 - t0) / 1000), decode_tps: nDecode / ((t2 - t1) / 1000), out };
}

await once(); // warm-up
const r = await once();
console.log(JSON.stringify({ engine: "llama.cpp", variant: "Q4_1", batch: 1, prefill_tps: r.prefill_tps,
  decode_tps: r.decode_tps, first_tokens: r.out.slice(0, 16), llama_cpp: llama.llamaCppRelease?.release ?? null }));
await context.dispose();
await model.dispose();
