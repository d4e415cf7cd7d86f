// The generated test models must load and behave as promised in the real node-llama-cpp, since every
// other test and benchmark relies on them.
import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {createHash} from "node:crypto";
import {mkdtemp, readFile, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {
    getLlama, GgufInsights, LlamaChatSession, LlamaCompletion, LlamaLogLevel, QwenChatWrapper, readGgufFileInfo, type Llama
} from "node-llama-cpp";
import {arr, encodeGguf, f32, f32ToF16, str, u32} from "../../src/testing/gguf-writer.js";
import {buildTinyQwen35, SCRIPTED_ANSWER, writeTinyQwen35, type TinyQwen35Options} from "../../src/testing/tiny-qwen35.js";

const SYSTEM_PROMPT = "You are a helpful assistant on an edge device.";

void describe("tiny qwen35 test models", () => {
    let dir = "";
    let llama: Llama | undefined;

    before(async () => {
        dir = await mkdtemp(join(tmpdir(), "qwen-edge-tiny-"));
        llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error});
    });

    after(async () => {
        await llama?.dispose();
        await rm(dir, {recursive: true, force: true});
    });

    async function write(name: string, options: TinyQwen35Options): Promise<string> {
        return (await writeTinyQwen35(join(dir, name), options)).path;
    }

    /** Chats like the daemon does: QwenChatWrapper 3.5, thoughts discouraged, a system prompt, greedy. */
    async function chat(modelPath: string, prompts: string[], maxTokens: number): Promise<Array<{text: string; stopReason: string}>> {
        assert.ok(llama);
        const model = await llama.loadModel({modelPath});
        const context = await model.createContext({contextSize: 512, threads: 1, batchSize: 128});
        try {
            const sequence = context.getSequence();
            const results: Array<{text: string; stopReason: string}> = [];
            for (const prompt of prompts) {
                await sequence.clearHistory();
                const session = new LlamaChatSession({
                    contextSequence: sequence,
                    systemPrompt: SYSTEM_PROMPT,
                    chatWrapper: new QwenChatWrapper({variation: "3.5", thoughts: "discourage"}),
                    autoDisposeSequence: false
                });
                const r = await session.promptWithMeta(prompt, {maxTokens});
                results.push({text: r.responseText, stopReason: r.stopReason});
                session.dispose({disposeSequence: false});
            }
            return results;
        } finally {
            await context.dispose();
            await model.dispose();
        }
    }

    void it("converts float32 to IEEE half with round-to-nearest-even", () => {
        const cases: Array<[number, number]> = [
            [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff], [65520, 0x7c00],
            [1e9, 0x7c00], [-Infinity, 0xfc00], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [1.5 * 2 ** -25, 0x0001],
            [2 ** -14, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [0.1, 0x2e66]
        ];
        for (const [value, bits] of cases) assert.equal(f32ToF16(value), bits, `f16(${value})`);
        assert.equal(f32ToF16(NaN) & 0x7c00, 0x7c00);
        assert.notEqual(f32ToF16(NaN) & 0x3ff, 0);
    });

    void it("lays out GGUF v3 with aligned tensor data", () => {
        const data = new Float32Array([1, -2, 0.5, 3]);
        const buf = encodeGguf({"general.architecture": str("test"), "x.list": arr("i32", [1, -1]), "x.eps": f32(1e-6)}, [
            {name: "a", dims: [3], type: "f32"},
            {name: "b", dims: [2, 2], type: "f32", data},
            {name: "c", dims: [4], type: "f16", data}
        ], {alignment: 64});
        assert.equal(buf.toString("latin1", 0, 4), "GGUF");
        assert.equal(buf.readUInt32LE(4), 3);
        assert.equal(buf.readBigUInt64LE(8), 3n);
        assert.equal(buf.readBigUInt64LE(16), 4n); // general.alignment added for a non-default alignment
        assert.equal(buf.length % 64, 0);
        // tensors: a (12 bytes, zeros) at 0, b at 64, c at 128: data section ends 128 + 8, padded to 192
        const dataStart = buf.length - 192;
        assert.equal(dataStart % 64, 0);
        assert.deepEqual([0, 1, 2, 3].map((i) => buf.readFloatLE(dataStart + 64 + 4 * i)), [1, -2, 0.5, 3]);
        assert.deepEqual([0, 1, 2, 3].map((i) => buf.readUInt16LE(dataStart + 128 + 2 * i)), [0x3c00, 0xc000, 0x3800, 0x4200]);
        assert.equal(buf.readFloatLE(dataStart), 0);
    });

    void it("is deterministic: same seed, same bytes; another seed, other bytes", {timeout: 30_000}, async () => {
        const a = buildTinyQwen35({seed: 3});
        const b = buildTinyQwen35({seed: 3});
        assert.ok(a.equals(b));
        assert.ok(!a.equals(buildTinyQwen35({seed: 4})));
        const written = await writeTinyQwen35(join(dir, "det.gguf"), {seed: 3});
        assert.equal(written.bytes, a.length);
        assert.equal(written.sha256, createHash("sha256").update(a).digest("hex"));
        assert.ok((await readFile(written.path)).equals(a));
    });

    void it("writes header-only fixtures that readGgufFileInfo and the memory estimator read", {timeout: 60_000}, async () => {
        assert.ok(llama);
        const tiny = encodeGguf({"general.architecture": str("llama"), "llama.block_count": u32(1)},
            [{name: "token_embd.weight", dims: [8, 4], type: "f16"}, {name: "output_norm.weight", dims: [8], type: "f32"}],
            {headerOnly: true});
        await writeFile(join(dir, "tiny-header.gguf"), tiny);
        const tinyInfo = await readGgufFileInfo(join(dir, "tiny-header.gguf"));
        assert.equal(tinyInfo.tensorCount, 2);
        assert.equal(tinyInfo.metadata.general.architecture, "llama");

        const shape: TinyQwen35Options = {hidden: 256, layers: 8};
        const full = await write("full.gguf", shape);
        const header = await write("header.gguf", {...shape, headerOnly: true});
        const [fullInfo, headerInfo] = await Promise.all([readGgufFileInfo(full), readGgufFileInfo(header)]);
        assert.equal(headerInfo.tensorCount, 6 * 14 + 2 * 11 + 3); // 6 DeltaNet layers, 2 attention layers, 3 globals
        assert.equal(headerInfo.tensorCount, fullInfo.tensorCount);
        assert.equal(headerInfo.metadata.general.architecture, "qwen35");
        const estimate = async (info: typeof fullInfo): Promise<[number, number]> => {
            const insights = await GgufInsights.from(info, llama);
            const m = await insights.estimateModelResourceRequirementsV2({gpuLayers: 0});
            const c = await insights.estimateContextResourceRequirementsV2({contextSize: 1024, modelGpuLayers: 0, batchSize: 128, sequences: 1});
            return [m.cpuRam, c.cpuRam];
        };
        assert.deepEqual(await estimate(headerInfo), await estimate(fullInfo));
    });

    void it("random model generates text", {timeout: 60_000}, async () => {
        assert.ok(llama);
        const model = await llama.loadModel({modelPath: await write("random.gguf", {kind: "random"})});
        const context = await model.createContext({contextSize: 512, threads: 1, batchSize: 128});
        try {
            let tokens = 0;
            const completion = new LlamaCompletion({contextSequence: context.getSequence()});
            const r = await completion.generateCompletionWithMeta("Once upon a time", {
                maxTokens: 32,
                onToken: (t) => { tokens += t.length; }
            });
            assert.ok(tokens > 0, "no token generated");
            assert.ok(r.response.length > 0);
            assert.ok(["maxTokens", "eogToken"].includes(r.metadata.stopReason), r.metadata.stopReason);
        } finally {
            await context.dispose();
            await model.dispose();
        }
    });

    void it("scripted model answers SCRIPTED_ANSWER to any prompt", {timeout: 120_000}, async () => {
        const prompts = ["Hi there", "What is the weather in Paris today? Answer with one word, please."];
        for (const options of [{kind: "scripted", seed: 1}, {kind: "scripted", seed: 9, hidden: 128, layers: 8, weightType: "f32"}] as const) {
            const results = await chat(await write(`scripted-${options.seed}.gguf`, options), prompts, 100);
            for (const r of results) assert.deepEqual(r, {text: SCRIPTED_ANSWER, stopReason: "eogToken"}, JSON.stringify(options));
        }
    });

    void it("endless model runs until maxTokens", {timeout: 120_000}, async () => {
        const [r] = await chat(await write("endless.gguf", {kind: "endless"}), ["Tell me a long story."], 200);
        assert.equal(r?.stopReason, "maxTokens");
        assert.ok((r?.text.length ?? 0) > 0);
    });
});
