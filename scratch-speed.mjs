import {getLlama, LlamaLogLevel, LlamaCompletion} from "node-llama-cpp";
const llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error});
const maxTokens = Number(process.env.N ?? 300);
for (const f of process.argv.slice(2)) {
  const model = await llama.loadModel({modelPath: f});
  const ctx = await model.createContext({contextSize: 1024, threads: 1, batchSize: 128});
  const seq = ctx.getSequence();
  const c = new LlamaCompletion({contextSequence: seq});
  const res = [];
  for (let i = 0; i < 4; i++) {
    await seq.clearHistory();
    const t0 = performance.now(); let n = 0;
    const r = await c.generateCompletionWithMeta("Once upon a time", {maxTokens, onToken: (t) => { n += t.length; }});
    res.push(`${n}tok ${r.metadata.stopReason} ${(n / (performance.now() - t0) * 1000).toFixed(0)}/s`);
  }
  console.log(f, res.join(" | "));
  await ctx.dispose(); await model.dispose();
}
