import {getLlama, LlamaLogLevel, LlamaChatSession, GgufInsights, readGgufFileInfo} from "node-llama-cpp";
const llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath: process.argv[2]});
const ctx = await model.createContext({contextSize: 512, threads: 1, batchSize: 128});
const s = new LlamaChatSession({contextSequence: ctx.getSequence(), systemPrompt: "You are helpful."});
console.log(s.chatWrapper.wrapperName, s.chatWrapper.constructor.name, s.chatWrapper.variation);
const info = await readGgufFileInfo(process.argv[2]);
const ins = await GgufInsights.from(info, llama);
console.log(ins.estimateModelResourceRequirementsV2?.({gpuLayers: 0}), ins.estimateContextResourceRequirementsV2?.({contextSize: 512, modelGpuLayers: 0, batchSize: 128, sequences: 1}));
