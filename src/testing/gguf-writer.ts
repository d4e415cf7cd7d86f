// A dependency-free GGUF v3 encoder, used to generate the models that tests and benchmarks load.
// `encodeGguf` writes tensor data in place into one Buffer (small models); `writeGgufFile` streams it to a
// file chunk by chunk, so a real-size model (hundreds of MB to GB) never has to fit in memory.
import {closeSync, openSync, writeSync} from "node:fs";
import {endianness} from "node:os";
import {GGML_TYPES, type GgmlTensorType} from "../models/qwen35-tensors.js";

export type GgufScalarType = "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "bool" | "string" | "u64" | "i64" | "f64";
export type GgufMetaValue =
    | {type: Exclude<GgufScalarType, "bool" | "string">; value: number | bigint}
    | {type: "bool"; value: boolean}
    | {type: "string"; value: string}
    | {type: "array"; itemType: GgufScalarType; value: Array<number | bigint | string | boolean>};

/** Quantized ggml block types the writer can lay out (their bytes come from `fillBytes`). */
export type GgmlQuantType = Exclude<GgmlTensorType, "f32" | "f16">;
export {GGML_TYPES, type GgmlTensorType};

export interface GgufTensorSpec {
    name: string;
    /** innermost first, as GGUF stores them */
    dims: number[];
    type: GgmlTensorType;
    /** values in row-major order of the dims (innermost fastest); omitted -> zeros */
    data?: Float32Array;
    /**
     * Alternative to `data` for big tensors: called with consecutive chunks to fill with the values of
     * elements [start, start + chunk.length), so no full-size Float32Array is ever needed.
     */
    fill?: (chunk: Float32Array, start: number) => void;
    /**
     * For quantized types (required for them to hold anything but zeros): fill `chunk` with the encoded
     * blocks starting at block `firstBlock`; chunks always hold whole blocks.
     */
    fillBytes?: (chunk: Buffer, firstBlock: number) => void;
}

export interface EncodeOptions {
    /**
     * write only the header (metadata + tensor infos, padded to the alignment), no tensor data: a "header-only
     * fixture" that node-llama-cpp's readGgufFileInfo can still read. Default false
     */
    headerOnly?: boolean;
    /** default 32 */
    alignment?: number;
}

const VALUE_TYPE: Record<GgufScalarType | "array", number> = {
    u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12
};
const INT_RANGE: Partial<Record<GgufScalarType, [number, number]>> = {
    u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff]
};
const LITTLE_ENDIAN_HOST = endianness() === "LE";

export const u8 = (n: number): GgufMetaValue => ({type: "u8", value: n});
export const i32 = (n: number): GgufMetaValue => ({type: "i32", value: n});
export const u32 = (n: number): GgufMetaValue => ({type: "u32", value: n});
export const u64 = (n: number | bigint): GgufMetaValue => ({type: "u64", value: n});
export const f32 = (n: number): GgufMetaValue => ({type: "f32", value: n});
export const f64 = (n: number): GgufMetaValue => ({type: "f64", value: n});
export const bool = (b: boolean): GgufMetaValue => ({type: "bool", value: b});
export const str = (s: string): GgufMetaValue => ({type: "string", value: s});
export const arr = (itemType: GgufScalarType, values: Array<number | bigint | string | boolean>): GgufMetaValue =>
    ({type: "array", itemType, value: values});

/** Growable little-endian byte sink for the header (metadata and tensor infos). */
class ByteSink {
    private buf = Buffer.alloc(1 << 16);
    length = 0;

    private reserve(n: number): number {
        if (this.length + n > this.buf.length) {
            const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
            this.buf.copy(next, 0, 0, this.length);
            this.buf = next;
        }
        const at = this.length;
        this.length += n;
        return at;
    }

    /** reserve first: growing replaces this.buf */
    private put(n: number, write: (b: Buffer, at: number) => void): void {
        const at = this.reserve(n);
        write(this.buf, at);
    }

    u32(n: number): void { this.put(4, (b, at) => b.writeUInt32LE(n, at)); }
    u64(n: number | bigint): void { this.put(8, (b, at) => b.writeBigUInt64LE(toBigInt(n, 0n, 2n ** 64n - 1n), at)); }
    bytes(b: Buffer): void { this.put(b.length, (out, at) => b.copy(out, at)); }
    string(s: string): void {
        const b = Buffer.from(s, "utf8");
        this.u64(b.length);
        this.bytes(b);
    }

    scalar(type: GgufScalarType, v: number | bigint | string | boolean): void {
        if (type === "string") {
            if (typeof v !== "string") throw new TypeError(`GGUF string value expected, got ${typeof v}`);
            this.string(v);
            return;
        }
        if (type === "bool") {
            if (typeof v !== "boolean") throw new TypeError(`GGUF bool value expected, got ${typeof v}`);
            this.put(1, (b, at) => b.writeUInt8(v ? 1 : 0, at));
            return;
        }
        if (typeof v !== "number" && typeof v !== "bigint") throw new TypeError(`GGUF ${type} value expected, got ${typeof v}`);
        switch (type) {
            case "f32": this.put(4, (b, at) => b.writeFloatLE(Number(v), at)); return;
            case "f64": this.put(8, (b, at) => b.writeDoubleLE(Number(v), at)); return;
            case "u64": this.u64(v); return;
            case "i64": this.put(8, (b, at) => b.writeBigInt64LE(toBigInt(v, -(2n ** 63n), 2n ** 63n - 1n), at)); return;
        }
        const [min, max] = INT_RANGE[type] ?? [0, 0];
        const n = Number(v);
        if (!Number.isInteger(n) || n < min || n > max) throw new RangeError(`${String(v)} is not a valid GGUF ${type}`);
        const size = type === "u8" || type === "i8" ? 1 : type === "u16" || type === "i16" ? 2 : 4;
        const at = this.reserve(size);
        if (min < 0) this.buf.writeIntLE(n, at, size);
        else this.buf.writeUIntLE(n, at, size);
    }

    value(v: GgufMetaValue): void {
        this.u32(VALUE_TYPE[v.type]);
        if (v.type !== "array") {
            this.scalar(v.type, v.value);
            return;
        }
        this.u32(VALUE_TYPE[v.itemType]);
        this.u64(v.value.length);
        for (const item of v.value) this.scalar(v.itemType, item);
    }

    result(): Buffer { return this.buf.subarray(0, this.length); }
}

function toBigInt(v: number | bigint, min: bigint, max: bigint): bigint {
    if (typeof v === "number" && !Number.isSafeInteger(v)) throw new RangeError(`${v} is not a safe integer`);
    const b = BigInt(v);
    if (b < min || b > max) throw new RangeError(`${b} is out of range`);
    return b;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** float32 bits -> IEEE half bits, round to nearest even; subnormals, infinities and NaN handled. */
export function f32BitsToF16(x: number): number {
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
    const e = exp - 112; // rebias 127 -> 15
    if (e >= 0x1f) return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10) return sign;
        const m = mant | 0x800000;
        const shift = 14 - e;
        let half = m >>> shift;
        const rem = m & ((1 << shift) - 1);
        const halfway = 1 << (shift - 1);
        if (rem > halfway || (rem === halfway && (half & 1) !== 0)) half++;
        return sign | half;
    }
    let half = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    // a carry out of the mantissa correctly bumps the exponent (up to infinity)
    if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++;
    return sign | half;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);
/** A single number -> IEEE half bits (the float32 rounding happens first, as when converting stored f32 data). */
export function f32ToF16(v: number): number {
    scratchF32[0] = v;
    return f32BitsToF16(scratchU32[0] ?? 0);
}

function writeValues(view: DataView, out: Buffer, offset: number, type: "f32" | "f16", src: Float32Array): void {
    if (type === "f32") {
        if (LITTLE_ENDIAN_HOST) {
            Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(out, offset);
        } else {
            for (let i = 0; i < src.length; i++) view.setFloat32(offset + 4 * i, src[i] ?? 0, true);
        }
        return;
    }
    const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
    for (let i = 0; i < bits.length; i++) view.setUint16(offset + 2 * i, f32BitsToF16(bits[i] ?? 0), true);
}

interface TensorLayout {spec: GgufTensorSpec; elements: number; offset: number; bytes: number}

function layoutTensors(tensors: GgufTensorSpec[], alignment: number): {layout: TensorLayout[]; dataSize: number} {
    const names = new Set<string>();
    let cursor = 0;
    const layout = tensors.map((spec) => {
        if (names.has(spec.name)) throw new Error(`duplicate tensor name ${spec.name}`);
        names.add(spec.name);
        if (Buffer.byteLength(spec.name) > 63) throw new Error(`tensor name too long: ${spec.name}`);
        if (spec.dims.length < 1 || spec.dims.length > 4 || spec.dims.some((d) => !Number.isSafeInteger(d) || d < 1))
            throw new Error(`bad dims for ${spec.name}: [${spec.dims.join(", ")}]`);
        const elements = spec.dims.reduce((a, b) => a * b, 1);
        if (spec.data != null && spec.data.length !== elements)
            throw new Error(`${spec.name}: ${spec.data.length} values for ${elements} elements`);
        const geometry = GGML_TYPES[spec.type];
        if ((spec.dims[0] ?? 0) % geometry.blockElements !== 0)
            throw new Error(`${spec.name}: rows of ${spec.dims[0]} elements do not split into ${spec.type} blocks of ${geometry.blockElements}`);
        if (geometry.blockElements > 1 && spec.data != null)
            throw new Error(`${spec.name}: a ${spec.type} tensor takes encoded blocks (fillBytes), not values`);
        const offset = alignUp(cursor, alignment);
        const bytes = (elements / geometry.blockElements) * geometry.blockBytes;
        cursor = offset + bytes;
        return {spec, elements, offset, bytes};
    });
    return {layout, dataSize: alignUp(cursor, alignment)};
}

interface EncodedHeader {
    header: Buffer;
    layout: TensorLayout[];
    dataStart: number;
    dataSize: number;
}

function encodeHeader(meta: Record<string, GgufMetaValue>, tensors: GgufTensorSpec[], options: EncodeOptions): EncodedHeader {
    const metaAlignment = meta["general.alignment"];
    const alignment = options.alignment ?? (metaAlignment != null ? Number(metaAlignment.value) : 32);
    if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0)
        throw new RangeError(`alignment must be a power of two, got ${alignment}`);
    if (metaAlignment != null && Number(metaAlignment.value) !== alignment)
        throw new Error("general.alignment in the metadata differs from options.alignment");
    const entries = Object.entries(meta);
    if (metaAlignment == null && alignment !== 32) entries.push(["general.alignment", u32(alignment)]);

    const {layout, dataSize} = layoutTensors(tensors, alignment);
    const header = new ByteSink();
    header.bytes(Buffer.from("GGUF", "latin1"));
    header.u32(3);
    header.u64(layout.length);
    header.u64(entries.length);
    for (const [key, value] of entries) {
        header.string(key);
        header.value(value);
    }
    for (const t of layout) {
        header.string(t.spec.name);
        header.u32(t.spec.dims.length);
        for (const d of t.spec.dims) header.u64(d);
        header.u32(GGML_TYPES[t.spec.type].id);
        header.u64(t.offset);
    }
    const dataStart = alignUp(header.length, alignment);
    // keep the padding: llama.cpp's own reader (used by the V2 context estimate) must be able to seek to
    // the data section, or it fails and node-llama-cpp silently falls back to a different estimate
    return {header: Buffer.concat([header.result(), Buffer.alloc(dataStart - header.length)]), layout, dataStart, dataSize};
}

/** Size of the pieces a tensor's data is produced in (whole blocks, about 4 MiB). */
function pieceBytes(type: GgmlTensorType): number {
    const {blockBytes} = GGML_TYPES[type];
    return Math.max(blockBytes, Math.floor((4 << 20) / blockBytes) * blockBytes);
}

/** Produces one tensor's data piece by piece into `piece` and hands each filled piece to `emit`. */
function produceTensor(t: TensorLayout, piece: Buffer, emit: (bytes: Buffer, at: number) => void): void {
    const {spec} = t;
    const geometry = GGML_TYPES[spec.type];
    const step = pieceBytes(spec.type);
    for (let at = 0; at < t.bytes; at += step) {
        const out = piece.subarray(0, Math.min(step, t.bytes - at));
        out.fill(0);
        if (geometry.blockElements > 1) {
            spec.fillBytes?.(out, at / geometry.blockBytes);
        } else if (spec.data != null || spec.fill != null) {
            const first = at / geometry.blockBytes;
            const values = new Float32Array(out.length / geometry.blockBytes);
            if (spec.data != null) values.set(spec.data.subarray(first, first + values.length));
            else spec.fill?.(values, first);
            writeValues(new DataView(out.buffer, out.byteOffset, out.byteLength), out, 0, spec.type === "f32" ? "f32" : "f16", values);
        }
        emit(out, at);
    }
}

export function encodeGguf(meta: Record<string, GgufMetaValue>, tensors: GgufTensorSpec[], options: EncodeOptions = {}): Buffer {
    const {header, layout, dataStart, dataSize} = encodeHeader(meta, tensors, options);
    if (options.headerOnly === true) return header;
    // Buffer.alloc zero-fills: padding and tensors without data stay zero
    const out = Buffer.alloc(dataStart + dataSize);
    header.copy(out, 0);
    const piece = Buffer.alloc(4 << 20);
    for (const t of layout) produceTensor(t, piece, (bytes, at) => bytes.copy(out, dataStart + t.offset + at));
    return out;
}

/**
 * Writes the GGUF straight to `path`, tensor by tensor in ~4 MiB pieces: memory stays flat whatever the
 * model's size. Returns the file's size.
 */
export function writeGgufFile(path: string, meta: Record<string, GgufMetaValue>, tensors: GgufTensorSpec[], options: EncodeOptions = {}): number {
    const {header, layout, dataStart, dataSize} = encodeHeader(meta, tensors, options);
    const fd = openSync(path, "w", 0o644);
    try {
        writeFully(fd, header, 0);
        if (options.headerOnly === true) return header.length;
        const piece = Buffer.alloc(4 << 20);
        let end = dataStart;
        for (const t of layout) {
            produceTensor(t, piece, (bytes, at) => writeFully(fd, bytes, dataStart + t.offset + at));
            end = dataStart + t.offset + t.bytes;
        }
        // the padding after the last tensor, so the file has the size the layout promises
        const size = dataStart + dataSize;
        if (size > end) writeFully(fd, Buffer.alloc(size - end), end);
        return size;
    } finally {
        closeSync(fd);
    }
}

function writeFully(fd: number, bytes: Buffer, position: number): void {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}
