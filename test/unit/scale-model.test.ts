// The real-scale test models: published Qwen3.5 shapes with random quantized blocks (src/testing/scale-model.ts).
import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {mkdtemp, open, rm} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {readGgufFileInfo} from "node-llama-cpp";
import {catalogVariant} from "../../src/models/catalog.js";
import {readGgufLayout} from "../../src/models/gguf-check.js";
import {GGML_TYPES} from "../../src/models/qwen35-tensors.js";
import {decodeBlock, randomBlocks} from "../../src/testing/quant-blocks.js";
import {writeScaleModel} from "../../src/testing/scale-model.js";

let dir: string;
before(async () => {
    dir = await mkdtemp(join(tmpdir(), "qe-scale-model-"));
});
after(async () => {
    await rm(dir, {recursive: true, force: true});
});

const stats = (values: number[]): {mean: number; std: number} => {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    return {mean, std: Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length)};
};

void describe("quantized blocks", () => {
    for (const type of ["q8_0", "q4_K", "q5_K", "q6_K"] as const) {
        void it(`${type}: decoded weights are centred with the asked spread, and zero blocks are zero`, () => {
            const {blockBytes} = GGML_TYPES[type];
            const blocks = 64;
            const chunk = Buffer.alloc(blocks * blockBytes);
            randomBlocks(type, {sigma: 0.03, seed: 12345, zeroBlock: (b) => b === 7})(chunk, 0);
            const values: number[] = [];
            for (let b = 0; b < blocks; b++) {
                const decoded = [...decodeBlock(type, chunk.subarray(b * blockBytes, (b + 1) * blockBytes))];
                if (b === 7) assert.ok(decoded.every((v) => v === 0), "block 7 is zero");
                else values.push(...decoded);
            }
            const {mean, std} = stats(values);
            assert.ok(Math.abs(mean) < 0.003, `mean ${mean}`);
            assert.ok(Math.abs(std / 0.03 - 1) < 0.1, `std ${std}`);
        });
    }
});

void describe("real-scale qwen35 models", () => {
    void it("0.8B Q4_K_M: the published shape and vocabulary, within 5 % of the published file's size", async () => {
        const path = join(dir, "Qwen3.5-0.8B-Q4_K_M.gguf");
        const file = writeScaleModel(path, {variant: "0.8b", quant: "Q4_K_M"});
        assert.ok(Math.abs(file.bytes / 528e6 - 1) < 0.05, `${file.bytes} bytes vs ~528 MB published`);
        const layout = await readGgufLayout(path);
        assert.equal(layout.requiredBytes, layout.dataStart + file.tensorBytes);
        assert.ok(layout.dataStart > 5e6, `a real vocabulary makes a header of several MB (${layout.dataStart} bytes)`);
        const info = await readGgufFileInfo(path, {logWarnings: false});
        const a = catalogVariant("0.8b").architecture;
        assert.equal(info.metadata.general.architecture, "qwen35");
        assert.equal(info.metadata.tokenizer?.ggml?.tokens?.length, a.vocabSize);
        const embedding = info.fullTensorInfo?.find((t) => t.name === "token_embd.weight");
        assert.deepEqual(embedding?.dimensions.map(Number), [a.embeddingLength, a.vocabSize]);
        // the endless kind: the control tokens' output rows are zero (tied embedding: Q6_K, 4 blocks a row)
        const imEnd = info.metadata.tokenizer?.ggml?.eos_token_id as number;
        const fd = await open(path, "r");
        try {
            const row = Buffer.alloc(4 * 210);
            await fd.read(row, 0, row.length, layout.dataStart + Number(embedding.offset) + imEnd * row.length);
            assert.ok([0, 1, 2, 3].every((b) => decodeBlock("q6_K", row.subarray(b * 210, (b + 1) * 210)).every((v) => v === 0)));
        } finally {
            await fd.close();
        }
    });

    void it("2B Q4_K_M and 0.8B Q8_0 sizes are within 5 % of the published files", () => {
        const twoB = writeScaleModel(join(dir, "2b.gguf"), {variant: "2b", quant: "Q4_K_M"});
        assert.ok(Math.abs(twoB.bytes / 1.27e9 - 1) < 0.05, `${twoB.bytes} vs ~1.27 GB`);
        const q8 = writeScaleModel(join(dir, "q8.gguf"), {variant: "0.8b", quant: "Q8_0"});
        assert.ok(Math.abs(q8.bytes / 834e6 - 1) < 0.05, `${q8.bytes} vs ~834 MB`);
    });
});
