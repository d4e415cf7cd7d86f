import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {mkdtemp, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {inspectGgufFile, readGgufLayout} from "../../src/models/gguf-check.js";
import {arr, bool, encodeGguf, f32, str, u32, u64, type GgufTensorSpec} from "../../src/testing/gguf-writer.js";

let dir: string;

before(async () => {
    dir = await mkdtemp(join(tmpdir(), "qe-gguf-check-"));
});

after(async () => {
    await rm(dir, {recursive: true, force: true});
});

/** A header with every kind of field: scalars of each width, strings, arrays of numbers and of strings, tensor infos of 1-3 dims. */
function mixedFile(): {data: Buffer} {
    const tensors: GgufTensorSpec[] = [
        {name: "a.weight", dims: [3], type: "f32"},
        {name: "bb.weight", dims: [5, 7], type: "f16"},
        {name: "ccc.weight", dims: [2, 3, 4], type: "f32"},
        {name: "d", dims: [33], type: "f16"}
    ];
    const data = encodeGguf({
        "general.architecture": str("test"),
        "x.u32": u32(0xdeadbeef),
        "x.u64": u64(2n ** 40n),
        "x.f32": f32(1.5),
        "x.bool": bool(true),
        "x.empty": str(""),
        "x.unicode": str("äöü ✓ 𝄞"),
        "x.ints": arr("i32", [1, -2, 3, -4, 5, -6, 7]),
        "x.strings": arr("string", ["", "a", "bc", "def", "ghij", "✓✓"]),
        "x.longs": arr("u64", [1n, 2n, 3n])
    }, tensors);
    return {data};
}

describe("GGUF header reader", () => {
    it("reads the same layout whatever the window size, so a window boundary can fall inside any field", async () => {
        const {data} = mixedFile();
        const path = join(dir, "mixed.gguf");
        await writeFile(path, data);
        const whole = await readGgufLayout(path, {windowBytes: data.length});
        assert.equal(whole.tensorCount, 4);
        // the writer pads the data section to the alignment; the header asks for the last tensor's end
        // tensors at 0 (12 bytes), 32 (70), 128 (96) and 224 (66): the last ends 290 bytes into the data
        assert.equal(whole.requiredBytes, whole.dataStart + 290);
        // Every window size up to the header's length puts a boundary inside counts, key and string lengths,
        // string bytes, array headers, array items, tensor names, dims, types and offsets.
        for (let window = 1; window <= whole.dataStart; window++) {
            assert.deepEqual(await readGgufLayout(path, {windowBytes: window}), whole, `window of ${window} bytes`);
        }
    });

    it("reads a header of several MB (a real vocabulary's size) with the default 1 MiB window", async () => {
        // 250,000 token strings and 240,000 merges: ~6 MB of small fields, like a real Qwen3.5 vocabulary.
        const tokens = Array.from({length: 250_000}, (_, i) => `tok${i.toString(36)}`);
        const merges = Array.from({length: 240_000}, (_, i) => `m${i % 977} ${i.toString(36)}`);
        const data = encodeGguf({
            "general.architecture": str("test"),
            "tokenizer.ggml.tokens": arr("string", tokens),
            "tokenizer.ggml.token_type": arr("i32", tokens.map(() => 1)),
            "tokenizer.ggml.merges": arr("string", merges)
        }, [{name: "w", dims: [64, 4], type: "f16"}]);
        assert.ok(data.length > 5 * (1 << 20), `header of ${data.length} bytes`);
        const path = join(dir, "big-header.gguf");
        await writeFile(path, data);
        const layout = await readGgufLayout(path);
        assert.equal(layout.requiredBytes, data.length);
        assert.equal(layout.dataStart, data.length - 64 * 4 * 2);
        const facts = await inspectGgufFile(path);
        assert.equal(facts.requiredBytes, data.length);
    });

    it("still finds a truncated file when the header itself is cut inside a field", async () => {
        const {data} = mixedFile();
        const layout = await readGgufLayout(join(dir, "mixed.gguf"));
        for (const cut of [3, 13, 40, Math.floor(layout.dataStart / 2), layout.dataStart - 1]) {
            const path = join(dir, `cut-${cut}.gguf`);
            await writeFile(path, data.subarray(0, cut));
            await assert.rejects(inspectGgufFile(path), (err: Error & {reason?: string}) => {
                assert.ok(err.reason === "truncated" || err.reason === "not_gguf", `cut at ${cut}: ${err.reason}`);
                return true;
            });
        }
        const short = join(dir, "short-data.gguf");
        await writeFile(short, data.subarray(0, layout.requiredBytes - 1));
        await assert.rejects(inspectGgufFile(short), /truncated GGUF: the file has \d+ bytes but its tensors need \d+/);
    });
});
