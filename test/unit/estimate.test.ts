import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {createServer, type Server} from "node:http";
import {mkdtemp, readFile, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {basename, dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {GgufInsights, LlamaLogLevel, getLlama, readGgufFileInfo, type Llama} from "node-llama-cpp";
import {
    MODEL_VARIANTS, RUNTIME_OVERHEAD_BYTES, TOKENIZER_BYTES_PER_TOKEN, activationBytes, catalogRequirement, catalogVariant, estimateContextBytes, modelUri,
    type ModelVariant
} from "../../src/models/catalog.js";
import {catalogTargets, estimateCandidates, estimateGgufRequirement, estimateRequirement} from "../../src/models/estimate.js";
import {planModel} from "../../src/models/planner.js";
import {probeDevice} from "../../src/system/probe.js";
import {headerDataBytes, writeQwen35Headers} from "../support/qwen35-headers.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/sysfs");
// a CPU that repacks only Q4_K (AVX2, no AMX): the weights are then the file's, whatever machine runs the test
const SHAPE = {contextSize: 4096, batchSize: 128, sequences: 1, cpu: {arch: "x64", features: ["avx2"]}};
const within = (actual: number, expected: number, tolerance: number): boolean => Math.abs(actual / expected - 1) <= tolerance;

let dir: string;
let llama: Llama;
let q4: Record<ModelVariant, string>;

before(async () => {
    dir = await mkdtemp(join(tmpdir(), "qwen-edge-estimate-"));
    q4 = await writeQwen35Headers(join(dir, "q4"), "Q4_K_M");
    llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error});
});

after(async () => {
    await llama?.dispose();
    await rm(dir, {recursive: true, force: true});
});

describe("header-only fixtures", () => {
    it("carry the real Qwen3.5 dimensions: node-llama-cpp counts the catalog's parameters", async () => {
        for (const variant of MODEL_VARIANTS) {
            const info = await readGgufFileInfo(q4[variant], {logWarnings: false});
            const insights = await GgufInsights.from(info, llama);
            assert.equal(info.metadata.general.architecture, "qwen35");
            assert.equal(insights.totalParameters, catalogVariant(variant).parameters, variant);
            assert.equal(insights.trainContextSize, 262_144);
            assert.equal(insights.modelSize, headerDataBytes(variant, "Q4_K_M"), `${variant}: tensor data the header describes`);
        }
        // Published sizes: 0.75B, 1.88B, 4.21B, 8.95B text parameters (the vision tower is a separate file).
        assert.deepEqual(MODEL_VARIANTS.map((v) => Math.round(catalogVariant(v).parameters / 1e7) / 100), [0.75, 1.88, 4.21, 8.95]);
    });
});

describe("V2 estimates over the real dimensions", () => {
    it("Q4_K_M weights match the catalog sizes and the context matches the catalog's arithmetic", async () => {
        let previous = 0;
        for (const variant of MODEL_VARIANTS) {
            const e = await estimateGgufRequirement(q4[variant], {...SHAPE, llama});
            const entry = catalogVariant(variant);
            assert.ok(within(e.weightsBytes, entry.files.Q4_K_M.approxBytes, 0.05), `${variant}: weights ${e.weightsBytes} vs catalog ${entry.files.Q4_K_M.approxBytes}`);
            assert.ok(e.weightsBytes >= e.modelSizeBytes, "no mmap discount");
            const arithmetic = estimateContextBytes(entry.architecture, SHAPE);
            assert.ok(within(e.contextBytes, arithmetic, 0.02), `${variant}: context ${e.contextBytes} vs ${arithmetic}`);
            // 4096 tokens: the KV cache of 6 or 8 layers, the recurrent state and one batch's activations; the compute
            // buffer's logits for a whole batch (248,320 × 128 × 4 B = 127 MB) are reserved but never touched
            assert.ok(e.contextBytes > 80e6 && e.contextBytes < 240e6, `${variant}: context ${e.contextBytes}`);
            assert.equal(e.vocabularySize, 248_320);
            assert.equal(e.tokenizerBytes, 248_320 * TOKENIZER_BYTES_PER_TOKEN, "every variant has the same vocabulary tables");
            assert.ok(e.weightsBytes > previous, "bigger variants need more");
            previous = e.weightsBytes;
        }
    });

    it("Q8_0 weights match the catalog sizes", async () => {
        const q8 = await writeQwen35Headers(join(dir, "q8"), "Q8_0", ["0.8b", "4b"]);
        for (const variant of ["0.8b", "4b"] as const) {
            const e = await estimateGgufRequirement(q8[variant], {...SHAPE, llama});
            const expected = catalogVariant(variant).files.Q8_0.approxBytes;
            assert.ok(within(e.weightsBytes, expected, 0.05), `${variant}: ${e.weightsBytes} vs ${expected}`);
        }
    });

    it("needs the right tensor types: F16 tensors would triple the weights of a Q4_K_M file", async () => {
        const f16 = await writeQwen35Headers(join(dir, "f16"), "F16", ["2b"]);
        const asF16 = await estimateGgufRequirement(f16["2b"], {...SHAPE, llama});
        const asQ4 = await estimateGgufRequirement(q4["2b"], {...SHAPE, llama});
        const parameters = catalogVariant("2b").parameters;
        assert.ok(within(asF16.weightsBytes, 2 * parameters, 0.01), "F16 is 16 bits per weight");
        const bitsPerWeight = (asQ4.weightsBytes * 8) / parameters;
        assert.ok(bitsPerWeight > 4.8 && bitsPerWeight < 5.8, `Q4_K_M at ${bitsPerWeight.toFixed(2)} bits per weight`);
        assert.equal(asF16.contextBytes, asQ4.contextBytes, "the context does not depend on the weights' type");
    });

    it("grows the context with sequences, context size and batch size", async () => {
        const base = await estimateGgufRequirement(q4["4b"], {...SHAPE, llama});
        const twoSequences = await estimateGgufRequirement(q4["4b"], {...SHAPE, sequences: 2, llama});
        const bigBatch = await estimateGgufRequirement(q4["4b"], {...SHAPE, batchSize: 512, llama});
        assert.ok(twoSequences.contextBytes > base.contextBytes * 1.3, "a second sequence adds its own KV cache and state");
        // a bigger batch adds activations; its logits rows are never asked for, so never resident
        const grown = bigBatch.contextBytes - base.contextBytes;
        assert.ok(grown >= activationBytes({...SHAPE, batchSize: 512}) - activationBytes(SHAPE), `grew ${grown}`);
        assert.ok(grown < 248_320 * 384 * 4 * 0.25, `grew ${grown}: not by the batch's logits rows`);
    });
});

describe("estimateRequirement", () => {
    it("reads a local file's header first", async () => {
        const r = await estimateRequirement({variant: "2b", quant: "Q4_K_M", path: q4["2b"]}, {...SHAPE, llama, remote: false});
        assert.equal(r.source, "gguf-header");
        assert.equal(r.uri, modelUri("2b", "Q4_K_M"));
        assert.equal(r.overheadBytes, RUNTIME_OVERHEAD_BYTES);
        assert.equal(r.requiredBytes, r.weightsBytes + r.tokenizerBytes + r.contextBytes + r.overheadBytes);
        assert.equal(r.note, undefined);
    });

    it("reads a remote header over HTTP range requests", async () => {
        const served = await serveFiles(Object.values(q4));
        try {
            const uri = `${served.url}/${basename(q4["0.8b"])}`;
            const remote = await estimateRequirement({variant: "0.8b", quant: "Q4_K_M", uri}, {...SHAPE, llama});
            const local = await estimateGgufRequirement(q4["0.8b"], {...SHAPE, llama});
            assert.equal(remote.source, "gguf-header", remote.note);
            assert.equal(remote.uri, uri);
            assert.equal(remote.weightsBytes, local.weightsBytes);
            assert.equal(remote.contextBytes, local.contextBytes);
            assert.ok(served.requests > 0);
        } finally {
            await served.close();
        }
    });

    it("falls back to the catalog when offline, and says why", async () => {
        const uri = "http://127.0.0.1:1/Qwen3.5-4B-Q4_K_M.gguf";
        const started = Date.now();
        const r = await estimateRequirement({variant: "4b", quant: "Q4_K_M", uri, path: join(dir, "missing.gguf")}, {...SHAPE, llama});
        assert.ok(Date.now() - started < 10_000, "no long retry loop");
        assert.equal(r.source, "catalog");
        assert.match(r.note ?? "", /^remote header unreadable: /);
        const {note: _note, ...numbers} = r;
        const {note: _expectedNote, ...expected} = catalogRequirement("4b", "Q4_K_M", uri, {...SHAPE});
        assert.deepEqual(numbers, expected);
    });

    it("falls back at once for a local file whose header is damaged (node-llama-cpp's reader would spin and grow)", async () => {
        const data = await readFile(q4["0.8b"]);
        const at = data.indexOf("token_embd.weight") + "token_embd.weight".length;
        for (let i = at; i < at + 12; i++) data[i] = data[i]! ^ 0xff;
        const damaged = join(dir, "damaged-header.gguf");
        await writeFile(damaged, data);
        const started = Date.now();
        const r = await estimateRequirement({variant: "0.8b", quant: "Q4_K_M", path: damaged}, {...SHAPE, llama, remote: false});
        assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
        assert.equal(r.source, "catalog");
        assert.match(r.note ?? "", /^local header unreadable: .*too many dimensions/);
    });

    it("falls back to the catalog for a file that is not a GGUF, or with remote reads off", async () => {
        const corrupt = join(dir, "corrupt.gguf");
        await writeFile(corrupt, "this is not a GGUF file");
        const bad = await estimateRequirement({variant: "9b", quant: "Q8_0", path: corrupt}, {...SHAPE, llama, remote: false});
        assert.equal(bad.source, "catalog");
        assert.match(bad.note ?? "", /^local header unreadable: /);
        const off = await estimateRequirement({variant: "9b", quant: "Q8_0"}, {...SHAPE, llama, remote: false});
        assert.equal(off.source, "catalog");
        assert.equal(off.note, "remote header reads are off");
    });
});

describe("planning from header estimates", () => {
    it("picks 2B on the recorded Pi 4 (4 GB): 4B Q4_K_M needs more than the budget", async () => {
        const targets = catalogTargets(["Q4_K_M"]).map((t) => ({...t, path: q4[t.variant]}));
        const requirements = await estimateCandidates(targets, {...SHAPE, llama, remote: false});
        assert.ok(requirements.every((r) => r.source === "gguf-header"));
        const device = await probeDevice({root: join(fixtures, "pi4-4gb")});
        const plan = planModel({memory: {kind: "probed", facts: device.memory}, candidates: requirements});
        assert.equal(plan.choice?.variant, "2b", plan.reason);
        const fourB = plan.candidates.find((c) => c.variant === "4b")!;
        assert.equal(fourB.fits, false);
        assert.ok(fourB.requiredBytes > plan.budgetBytes);
    });
});

/** A static file server with Range support, as Hugging Face's CDN answers. */
async function serveFiles(paths: string[]): Promise<{url: string; requests: number; close: () => Promise<void>}> {
    const files = new Map(await Promise.all(paths.map(async (p) => [basename(p), await readFile(p)] as const)));
    const state = {requests: 0};
    const server: Server = createServer((req, res) => {
        state.requests++;
        const body = files.get(decodeURIComponent((req.url ?? "").slice(1)));
        if (!body) {
            res.writeHead(404).end();
            return;
        }
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
        if (!range) {
            res.writeHead(200, {"content-length": body.length, "accept-ranges": "bytes"}).end(req.method === "HEAD" ? undefined : body);
            return;
        }
        const start = Number(range[1]);
        const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1);
        res.writeHead(206, {"content-length": end - start + 1, "content-range": `bytes ${start}-${end}/${body.length}`, "accept-ranges": "bytes"})
            .end(req.method === "HEAD" ? undefined : body.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    return {
        url: `http://127.0.0.1:${port}`,
        get requests() {
            return state.requests;
        },
        close: () => new Promise<void>((resolve) => server.close(() => resolve()))
    };
}
