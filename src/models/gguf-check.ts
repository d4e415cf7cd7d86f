// Structural check of a GGUF file before it is handed to llama.cpp: magic, version, and whether the file
// is long enough for the tensor data its header describes (a truncated file would otherwise load and crash).
import {createHash} from "node:crypto";
import {createReadStream} from "node:fs";
import {open, stat, type FileHandle} from "node:fs/promises";
import {resolve} from "node:path";
import {ConfigError, ModelUnavailableError} from "../errors.js";

export type ModelFileProblem =
    | "missing" | "not_gguf" | "unsupported_version" | "corrupt_header" | "truncated" | "size_mismatch" | "sha256_mismatch";

/** A model file that cannot be used; `reason` says why without parsing the message. */
export class ModelFileError extends ModelUnavailableError {
    public readonly reason: ModelFileProblem;
    public readonly path: string;
    /** the message without the path */
    public readonly detail: string;
    public constructor(reason: ModelFileProblem, path: string, detail: string) {
        super(`${path}: ${detail}`);
        this.reason = reason;
        this.path = path;
        this.detail = detail;
    }
}

export interface GgufFileFacts {
    bytes: number;
    mtimeMs: number;
    version: number;
    /** the smallest file size that holds every tensor the header lists */
    requiredBytes: number;
    sha256: string | null;
}

// ggml type -> [elements per block, bytes per block], as reported by the llama.cpp that node-llama-cpp 3.21.1 bundles
const GGML_TYPE_SIZES: Record<number, readonly [number, number]> = {
    0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 36],
    10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210], 15: [256, 292],
    16: [256, 66], 17: [256, 74], 18: [256, 98], 19: [256, 50], 20: [32, 18], 21: [256, 110], 22: [256, 82],
    23: [256, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8], 29: [256, 56], 30: [1, 2],
    34: [256, 54], 35: [256, 66], 39: [32, 17], 40: [64, 36], 41: [128, 18], 42: [64, 18]
};
// metadata value types of fixed size; 8 is a string, 9 an array
const VALUE_SIZES: Record<number, number> = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8};
const WINDOW = 1 << 20;

class HeaderProblem extends Error {
    public constructor(public readonly reason: ModelFileProblem, message: string) {
        super(message);
    }
}

/**
 * Reads the header through a window (1 MiB by default): a real vocabulary makes the header several MB of
 * small fields, so any field may straddle the window's end. `need` refills the window first and returns
 * the offset into the *new* buffer; callers read `this.buf` only after it returns (reading it before the
 * await would use the old buffer with the new offset).
 */
class HeaderReader {
    private buf = Buffer.alloc(0);
    private bufStart = 0;
    public pos = 0;
    public constructor(private readonly fd: FileHandle, private readonly size: number, private readonly window: number) {}

    private async need(n: number): Promise<number> {
        if (this.pos + n > this.size) throw new HeaderProblem("truncated", "the file ends inside its GGUF header");
        if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
            const length = Math.min(Math.max(n, this.window), this.size - this.pos);
            const buf = Buffer.alloc(length);
            let filled = 0;
            // read(2) may return less than asked (network file systems, signals): loop until the window is full
            while (filled < length) {
                const {bytesRead} = await this.fd.read(buf, filled, length - filled, this.pos + filled);
                if (bytesRead === 0) throw new HeaderProblem("truncated", "the file ends inside its GGUF header");
                filled += bytesRead;
            }
            this.buf = buf;
            this.bufStart = this.pos;
        }
        const at = this.pos - this.bufStart;
        this.pos += n;
        return at;
    }
    public async u32(): Promise<number> {
        const at = await this.need(4);
        return this.buf.readUInt32LE(at);
    }
    public async u64(): Promise<number> {
        const at = await this.need(8);
        const v = this.buf.readBigUInt64LE(at);
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new HeaderProblem("corrupt_header", "the GGUF header holds an impossible size");
        return Number(v);
    }
    public async bytes(n: number): Promise<Buffer> {
        const at = await this.need(n);
        return this.buf.subarray(at, at + n);
    }
    public skip(n: number): void {
        if (this.pos + n > this.size) throw new HeaderProblem("truncated", "the file ends inside its GGUF header");
        this.pos += n;
    }
    public async string(): Promise<string> {
        const length = await this.u64();
        return (await this.bytes(length)).toString("utf8");
    }
    public async skipValue(type: number, depth = 0): Promise<void> {
        const fixed = VALUE_SIZES[type];
        if (fixed !== undefined) return this.skip(fixed);
        if (type === 8) return this.skip(await this.u64());
        if (type !== 9 || depth > 2) throw new HeaderProblem("corrupt_header", `the GGUF header has an unknown value type ${type}`);
        const itemType = await this.u32();
        const count = await this.u64();
        const itemSize = VALUE_SIZES[itemType];
        if (itemSize !== undefined) return this.skip(count * itemSize);
        for (let i = 0; i < count; i++) await this.skipValue(itemType, depth + 1);
    }
}

/** Bytes of a tensor of this ggml type and shape; null for a type this table does not know. */
export function ggmlTensorBytes(type: number, dims: readonly number[]): number | null {
    const size = GGML_TYPE_SIZES[type];
    if (size === undefined) return null;
    const elements = dims.reduce((a, b) => a * b, 1);
    return Math.ceil(elements / size[0]) * size[1];
}

/** What the header says about the file's layout. */
export interface GgufLayout {
    version: number;
    tensorCount: number;
    /** where the tensor data starts (the header, padded to the alignment) */
    dataStart: number;
    /** the smallest file size that holds every tensor the header lists */
    requiredBytes: number;
}

/**
 * Reads a GGUF header's layout. `windowBytes` (default 1 MiB) is how much is read at a time; tests use
 * small windows so that a window boundary falls inside every kind of field.
 */
export async function readGgufLayout(path: string, options: {windowBytes?: number} = {}): Promise<GgufLayout> {
    try {
        return await readLayout(path, (await stat(path)).size, options.windowBytes ?? WINDOW);
    } catch (err) {
        if (err instanceof HeaderProblem) throw new ModelFileError(err.reason, path, err.message);
        throw err;
    }
}

async function readLayout(path: string, size: number, window = WINDOW): Promise<GgufLayout> {
    const fd = await open(path, "r");
    try {
        const r = new HeaderReader(fd, size, window);
        if (size < 4 || (await r.bytes(4)).toString("latin1") !== "GGUF")
            throw new HeaderProblem("not_gguf", "not a GGUF file (no GGUF magic)");
        const version = await r.u32();
        if (version !== 2 && version !== 3)
            throw new HeaderProblem("unsupported_version", `GGUF version ${version} is not supported (2 or 3)`);
        const tensorCount = await r.u64();
        const kvCount = await r.u64();
        if (tensorCount > 1e6 || kvCount > 1e6) throw new HeaderProblem("corrupt_header", "the GGUF header has impossible counts");
        let alignment = 32;
        for (let i = 0; i < kvCount; i++) {
            const key = await r.string();
            const type = await r.u32();
            if (key === "general.alignment" && (type === 4 || type === 10)) alignment = type === 4 ? await r.u32() : await r.u64();
            else await r.skipValue(type);
        }
        if (alignment < 1 || (alignment & (alignment - 1)) !== 0)
            throw new HeaderProblem("corrupt_header", `general.alignment ${alignment} is not a power of two`);
        let dataEnd = 0;
        for (let i = 0; i < tensorCount; i++) {
            const nameLength = await r.u64();
            r.skip(nameLength);
            const nDims = await r.u32();
            if (nDims > 8) throw new HeaderProblem("corrupt_header", "a tensor in the GGUF header has too many dimensions");
            const dims: number[] = [];
            for (let d = 0; d < nDims; d++) dims.push(await r.u64());
            const type = await r.u32();
            const offset = await r.u64();
            // an unknown (newer) type still bounds the size from below by its offset
            dataEnd = Math.max(dataEnd, offset + (ggmlTensorBytes(type, dims) ?? 0));
        }
        const dataStart = Math.ceil(r.pos / alignment) * alignment;
        return {version, tensorCount, dataStart, requiredBytes: dataStart + dataEnd};
    } finally {
        await fd.close();
    }
}

/** Streams the file through sha256; `onBytes` gets the running count (for a "verifying" progress line). */
export async function sha256File(path: string, onBytes?: (done: number) => void): Promise<string> {
    const hash = createHash("sha256");
    let done = 0;
    for await (const chunk of createReadStream(path, {highWaterMark: WINDOW}) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        done += chunk.length;
        onBytes?.(done);
    }
    return hash.digest("hex");
}

/**
 * The header alone (magic, version, counts, tensor dimensions), for readers of metadata only: a file
 * whose tensor data is short or absent passes. Throws ModelFileError like inspectGgufFile.
 */
export async function checkGgufHeader(path: string): Promise<void> {
    await readGgufLayout(path);
}

/**
 * Everything `checkGgufFile` checks, returning what it learned. With `hash: true` the sha256 is computed even
 * when none is expected (to remember it for later checks).
 */
export async function inspectGgufFile(path: string, expected: {sizeBytes?: number; sha256?: string} = {},
    options: {hash?: boolean; onHashBytes?: (done: number) => void} = {}): Promise<GgufFileFacts> {
    let st;
    try {
        st = await stat(path);
    } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new ModelFileError("missing", path, "no model file");
        throw err;
    }
    if (!st.isFile()) throw new ModelFileError("missing", path, "not a regular file");
    let layout;
    try {
        layout = await readLayout(path, st.size);
    } catch (err) {
        if (err instanceof HeaderProblem) throw new ModelFileError(err.reason, path, err.message);
        throw err;
    }
    if (st.size < layout.requiredBytes) {
        throw new ModelFileError("truncated", path,
            `truncated GGUF: the file has ${st.size} bytes but its tensors need ${layout.requiredBytes}`);
    }
    if (expected.sizeBytes !== undefined && st.size !== expected.sizeBytes)
        throw new ModelFileError("size_mismatch", path, `size mismatch: ${st.size} bytes, expected ${expected.sizeBytes}`);
    let sha256: string | null = null;
    if (expected.sha256 !== undefined || options.hash === true) {
        sha256 = await sha256File(path, options.onHashBytes);
        if (expected.sha256 !== undefined && sha256 !== expected.sha256.toLowerCase())
            // 12 hex digits tell the two apart and leave room in a one-line status for what to do about it
            throw new ModelFileError("sha256_mismatch", path, `sha256 mismatch: ${sha256.slice(0, 12)}…, expected ${expected.sha256.toLowerCase().slice(0, 12)}…`);
    }
    return {bytes: st.size, mtimeMs: st.mtimeMs, version: layout.version, requiredBytes: layout.requiredBytes, sha256};
}

/**
 * `model.path` at start: a path that does not exist, cannot be read or is not a GGUF is a mistake in
 * the configuration (a typo, the wrong file), which no restart fixes: ConfigError, exit 2. Only the
 * magic is read; a GGUF that is damaged inside is found by the full check at load, and the daemon
 * stays up degraded, as for a file that goes bad later.
 */
export async function checkConfiguredModelPath(path: string): Promise<void> {
    const shown = resolve(path) === path ? path : `${path} (${resolve(path)})`;
    let fd: FileHandle;
    try {
        if ((await stat(path)).isDirectory()) throw new ConfigError(`model.path: ${shown} is a directory; give the .gguf file in it (or set model.dir instead)`);
        fd = await open(path, "r");
    } catch (err) {
        if (err instanceof ConfigError) throw err;
        const code = (err as NodeJS.ErrnoException).code;
        throw new ConfigError(code === "ENOENT" ? `model.path: ${shown} does not exist`
            : `model.path: ${shown} cannot be read (${code ?? (err as Error).message})`);
    }
    try {
        const magic = Buffer.alloc(4);
        const {bytesRead} = await fd.read(magic, 0, 4, 0);
        if (bytesRead < 4 || magic.toString("latin1") !== "GGUF")
            throw new ConfigError(`model.path: ${shown} is not a GGUF file (it does not start with "GGUF")`);
    } finally {
        await fd.close();
    }
}
