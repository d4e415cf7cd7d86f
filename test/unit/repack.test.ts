// Which weights llama.cpp repacks on which CPU, and what that costs in resident memory (src/models/repack.ts).
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {catalogRequirement, catalogVariant, modelUri} from "../../src/models/catalog.js";
import {GGML_TYPES, qwen35Tensors, tensorTypeBytes} from "../../src/models/qwen35-tensors.js";
import {repackCost, repackedTypes, type CpuSimd} from "../../src/models/repack.js";
import {simdFromCpuinfo} from "../../src/system/probe.js";

const X64_AVX2: CpuSimd = {arch: "x64", features: ["avx2"]};
const X64_OLD: CpuSimd = {arch: "x64", features: []};
const PI5: CpuSimd = {arch: "arm64", features: ["asimddp"]};
const PI4: CpuSimd = {arch: "arm64", features: []};

function tensors(variant: "0.8b" | "9b", quant: "Q4_K_M" | "Q8_0") {
    return qwen35Tensors(catalogVariant(variant).architecture, quant)
        .map((t) => ({name: t.name, ggmlType: GGML_TYPES[t.type].id, dims: t.dims, bytes: tensorTypeBytes(t.type, t.dims)}));
}
const bytesOf = (list: ReturnType<typeof tensors>, type: number, skip = "token_embd.weight"): number =>
    list.filter((t) => t.ggmlType === type && t.name !== skip).reduce((a, t) => a + t.bytes, 0);

void describe("weight repacking", () => {
    void it("repacks by CPU: Q4_K on x86 AVX2; every K-quant and Q8_0 on ARM with dotprod; nothing on a Pi 4 or an old x86", () => {
        assert.deepEqual([...repackedTypes(X64_AVX2)].sort((a, b) => a - b), [2, 12, 20, 39]);
        assert.ok([8, 12, 13, 14].every((t) => repackedTypes(PI5).has(t)));
        assert.equal(repackedTypes(PI4).size, 0);
        assert.equal(repackedTypes(X64_OLD).size, 0);
    });

    void it("read into memory (the default), a file costs nothing extra on x86: the repacked copy replaces the original", () => {
        const q4 = tensors("0.8b", "Q4_K_M");
        const cost = repackCost(q4, X64_AVX2, false);
        assert.equal(cost.extraBytes, 0);
        // the Q4_K matrices (token embedding aside): measured 181.7 MiB in llama.cpp's CPU_REPACK buffer for this recipe
        assert.equal(cost.repackedBytes, bytesOf(q4, 12));
        assert.ok(Math.abs(cost.repackedBytes / 2 ** 20 - 181.7) < 1, `${cost.repackedBytes / 2 ** 20} MiB`);
    });

    void it("a mapped file keeps the original pages of every repacked matrix resident as well", () => {
        const q4 = tensors("0.8b", "Q4_K_M");
        assert.equal(repackCost(q4, X64_AVX2, true).extraBytes, bytesOf(q4, 12));
        assert.equal(repackCost(q4, PI4, true).extraBytes, 0);
    });

    void it("tied embeddings on ARM with dotprod: the output becomes a repacked second copy of the embedding", () => {
        const q4 = tensors("0.8b", "Q4_K_M");
        const embedding = q4.find((t) => t.name === "token_embd.weight")!;
        assert.equal(repackCost(q4, PI5, false).extraBytes, embedding.bytes, "Q6_K embedding, repacked as the output");
        // the 9B has its own output matrix: no second copy
        assert.equal(repackCost(tensors("9b", "Q4_K_M"), PI5, false).extraBytes, 0);
        const withoutRepack = catalogRequirement("0.8b", "Q4_K_M", modelUri("0.8b", "Q4_K_M"), {contextSize: 4096, batchSize: 128, sequences: 1, cpu: PI4});
        const onPi5 = catalogRequirement("0.8b", "Q4_K_M", modelUri("0.8b", "Q4_K_M"), {contextSize: 4096, batchSize: 128, sequences: 1, cpu: PI5});
        assert.equal(onPi5.weightsBytes - withoutRepack.weightsBytes, embedding.bytes);
    });

    void it("x86 with AMX: every K-quant and Q8_0 matrix packed for AMX, the tied output a second copy of the embedding", () => {
        const AMX: CpuSimd = {arch: "x64", features: ["avx2", "avx512f", "amx_int8"]};
        assert.ok([2, 3, 8, 12, 13, 14, 23].every((t) => repackedTypes(AMX).has(t)));
        const q4 = tensors("0.8b", "Q4_K_M");
        const embedding = q4.find((t) => t.name === "token_embd.weight")!;
        const data = q4.reduce((a, t) => a + t.bytes, 0);
        const extra = repackCost(q4, AMX, false).extraBytes;
        // measured (node-llama-cpp 3.21.1 prebuilt, Intel Xeon with AMX, the real-shape file): AMX 496.99 + CPU 200.83 + CPU_REPACK 0.32 MiB
        const measured = (496.99 + 200.83 + 0.32) * 2 ** 20;
        assert.ok(extra > embedding.bytes, "the output copy and the AMX packing");
        assert.ok(Math.abs(data + extra - measured) / measured < 0.02, `${((data + extra) / 2 ** 20).toFixed(1)} MiB vs measured ${(measured / 2 ** 20).toFixed(1)}`);
        const q8 = tensors("0.8b", "Q8_0");
        const q8measured = (850.84 + 260.16) * 2 ** 20;
        const q8total = q8.reduce((a, t) => a + t.bytes, 0) + repackCost(q8, AMX, false).extraBytes;
        assert.ok(Math.abs(q8total - q8measured) / q8measured < 0.02, `${(q8total / 2 ** 20).toFixed(1)} MiB vs measured ${(q8measured / 2 ** 20).toFixed(1)}`);
    });

    void it("reads the features from /proc/cpuinfo on x86 and ARM", () => {
        assert.deepEqual(simdFromCpuinfo("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"), ["avx2", "avx512f", "amx_int8"]);
        assert.deepEqual(simdFromCpuinfo("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f\n"), ["avx2", "avx512f"]);
        assert.deepEqual(simdFromCpuinfo("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"), ["asimddp"]);
        assert.deepEqual(simdFromCpuinfo(null), []);
    });
});
