import {getLlama, LlamaLogLevel, LlamaChatSession, LlamaCompletion, QwenChatWrapper, readGgufFileInfo} from "node-llama-cpp";
const llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.warn});
for (const f of process.argv.slice(2)) {
  const model = await llama.loadModel({modelPath: f});
  const ctx = await model.createContext({contextSize: 512, threads: 1, batchSize: 128});
  const seq = ctx.getSequence();
  for (const prompt of ["Hi there", "What is the weather today in Paris?"]) {
    await seq.clearHistory();
    const s = new LlamaChatSession({contextSequence: seq, systemPrompt: "You are a helpful assistant.", chatWrapper: new QwenChatWrapper({variation: "3.5", thoughts: "discourage"}), autoDisposeSequence: false});
    const t0 = performance.now(); let n = 0;
    const r = await s.promptWithMeta(prompt, {maxTokens: 300, onToken: (t) => { n += t.length; }});
    const dt = performance.now() - t0;
    console.log(f, JSON.stringify(r.responseText).slice(0, 200), r.stopReason, n, "tokens", (n / dt * 1000).toFixed(0), "tok/s");
    s.dispose({disposeSequence: false});
  }
  console.log(model.tokens.eos, model.detokenize(model.tokenize("<|im_start|>assistant\n<think>\n\n</think>\n\n", true)), model.tokenize("<|im_start|>assistant\n<think>\n\n</think>\n\n", true));
  await ctx.dispose(); await model.dispose();
}
