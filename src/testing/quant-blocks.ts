// Encoded ggml blocks (Q8_0, Q4_K, Q5_K, Q6_K) with random quants and fixed, well-formed scales, so a
// generated model has the byte layout, size and arithmetic cost of a quantized real one without any
// real weights. Layouts are ggml-common.h's:
//   block_q8_0 {half d; int8 qs[32]}                                        34 bytes / 32 weights
//   block_q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]}               144 bytes / 256 weights
//   block_q5_K {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}    176 bytes / 256 weights
//   block_q6_K {u8 ql[128]; u8 qh[64]; int8 scales[16]; half d}            210 bytes / 256 weights
import {f32ToF16, GGML_TYPES, type GgmlQuantType} from "./gguf-writer.js";

/** Random bytes the quants are copied from; a prime length, so rows of a tensor never line up with it. */
const POOL_BYTES = 1_048_573;
let pool: Buffer | null = null;

function randomPool(): Buffer {
    if (pool) return pool;
    pool = Buffer.alloc(POOL_BYTES);
    let a = 0x2545f491;
    for (let i = 0; i < POOL_BYTES; i++) {
        // xorshift32: fast, deterministic; quality is irrelevant for weights nobody reads
        a ^= a << 13;
        a ^= a >>> 17;
        a ^= a << 5;
        pool[i] = a & 0xff;
    }
    return pool;
}

/**
 * Standard deviation of one weight per unit of `d` for each type, with the sub-block scale (and min)
 * the encoder writes: uniform quants q with Q4_K: 32·q − 32·7.5·(dmin/d), Q5_K the same over 0..31,
 * Q6_K 8·(q − 32), Q8_0 q (signed byte). The mins cancel the mean, so weights are centred on 0.
 */
const SUB_SCALE = 32;
const Q6_SCALE = 8;
const STD_PER_D: Record<GgmlQuantType, number> = {
    q8_0: Math.sqrt((256 * 256 - 1) / 12),
    q4_K: SUB_SCALE * Math.sqrt((16 * 16 - 1) / 12),
    q5_K: SUB_SCALE * Math.sqrt((32 * 32 - 1) / 12),
    q6_K: Q6_SCALE * Math.sqrt((64 * 64 - 1) / 12)
};
/** dmin / d that cancels the mean quant (K-quants with a min). */
const MIN_PER_D: Partial<Record<GgmlQuantType, number>> = {q4_K: 7.5, q5_K: 15.5};

/** The 12 scale bytes of a K-quant super-block with every sub-block's scale = `sc` and min = `m` (6 bits each). */
function packKScales(sc: number, m: number): Buffer {
    const q = Buffer.alloc(12);
    for (let j = 0; j < 4; j++) {
        q[j] = (sc & 63) | ((sc >> 4) << 6);
        q[j + 4] = (m & 63) | ((m >> 4) << 6);
        q[j + 8] = (sc & 0xf) | ((m & 0xf) << 4);
    }
    return q;
}

export interface RandomBlocksOptions {
    /** target standard deviation of the weights */
    sigma: number;
    /** where in the random pool this tensor starts (e.g. a hash of its name) */
    seed: number;
    /** blocks to encode as all-zero weights (e.g. whole rows of the output matrix) */
    zeroBlock?: (block: number) => boolean;
}

/** A `fillBytes` for GgufTensorSpec: random quants, scales giving weights of about `sigma`. */
export function randomBlocks(type: GgmlQuantType, options: RandomBlocksOptions): (chunk: Buffer, firstBlock: number) => void {
    const {blockBytes} = GGML_TYPES[type];
    const d = options.sigma / STD_PER_D[type];
    const dBits = f32ToF16(d);
    const dminBits = f32ToF16(d * (MIN_PER_D[type] ?? 0));
    if (dBits === 0 || (dBits & 0x7c00) === 0x7c00) throw new RangeError(`sigma ${options.sigma} is out of half-float range for ${type}`);
    const scales = packKScales(SUB_SCALE, SUB_SCALE);
    const source = randomPool();
    const start = Math.abs(Math.trunc(options.seed)) % POOL_BYTES;
    return (chunk, firstBlock) => {
        // quants: consecutive bytes of the pool, wrapping, continuing where the previous chunk stopped
        let from = (start + firstBlock * blockBytes) % POOL_BYTES;
        for (let at = 0; at < chunk.length;) {
            const n = Math.min(chunk.length - at, POOL_BYTES - from);
            source.copy(chunk, at, from, from + n);
            at += n;
            from = 0;
        }
        const blocks = chunk.length / blockBytes;
        for (let b = 0; b < blocks; b++) {
            const at = b * blockBytes;
            const zero = options.zeroBlock?.(firstBlock + b) === true;
            switch (type) {
                case "q8_0":
                    chunk.writeUInt16LE(zero ? 0 : dBits, at);
                    break;
                case "q4_K":
                case "q5_K":
                    chunk.writeUInt16LE(zero ? 0 : dBits, at);
                    chunk.writeUInt16LE(zero ? 0 : dminBits, at + 2);
                    scales.copy(chunk, at + 4);
                    break;
                case "q6_K":
                    chunk.fill(Q6_SCALE, at + 192, at + 208);
                    chunk.writeUInt16LE(zero ? 0 : dBits, at + 208);
                    break;
            }
        }
    };
}

/** Decodes blocks back to weights: for tests of the encoder (and a reference for what llama.cpp reads). */
export function decodeBlock(type: GgmlQuantType, block: Buffer): Float32Array {
    const half = (bits: number): number => {
        const e = (bits >> 10) & 0x1f;
        const m = bits & 0x3ff;
        const v = e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
        return bits & 0x8000 ? -v : v;
    };
    if (type === "q8_0") {
        const d = half(block.readUInt16LE(0));
        return Float32Array.from({length: 32}, (_, i) => d * block.readInt8(2 + i));
    }
    const out = new Float32Array(256);
    if (type === "q6_K") {
        const d = half(block.readUInt16LE(208));
        // ggml's dequantize_row_q6_K: two halves of 128, each from 64 ql bytes and 32 qh bytes
        for (let n = 0; n < 2; n++) {
            const ql = 64 * n;
            const qh = 128 + 32 * n;
            const sc = 192 + 8 * n;
            for (let l = 0; l < 32; l++) {
                const is = Math.floor(l / 16);
                const h = block[qh + l] ?? 0;
                const q1 = (((block[ql + l] ?? 0) & 0xf) | ((h & 3) << 4)) - 32;
                const q2 = (((block[ql + l + 32] ?? 0) & 0xf) | (((h >> 2) & 3) << 4)) - 32;
                const q3 = (((block[ql + l] ?? 0) >> 4) | (((h >> 4) & 3) << 4)) - 32;
                const q4 = (((block[ql + l + 32] ?? 0) >> 4) | (((h >> 6) & 3) << 4)) - 32;
                out[128 * n + l] = d * block.readInt8(sc + is) * q1;
                out[128 * n + l + 32] = d * block.readInt8(sc + is + 2) * q2;
                out[128 * n + l + 64] = d * block.readInt8(sc + is + 4) * q3;
                out[128 * n + l + 96] = d * block.readInt8(sc + is + 6) * q4;
            }
        }
        return out;
    }
    // Q4_K / Q5_K: get_scale_min_k4 for each of 8 sub-blocks of 32
    const d = half(block.readUInt16LE(0));
    const dmin = half(block.readUInt16LE(2));
    const q = block.subarray(4, 16);
    const scaleMin = (j: number): [number, number] => j < 4
        ? [(q[j] ?? 0) & 63, (q[j + 4] ?? 0) & 63]
        : [((q[j + 4] ?? 0) & 0xf) | (((q[j - 4] ?? 0) >> 6) << 4), ((q[j + 4] ?? 0) >> 4) | (((q[j] ?? 0) >> 6) << 4)];
    const qs = type === "q4_K" ? block.subarray(16) : block.subarray(48);
    const qh = type === "q5_K" ? block.subarray(16, 48) : null;
    for (let j = 0; j < 8; j++) {
        const [sc, m] = scaleMin(j);
        for (let l = 0; l < 32; l++) {
            const byte = qs[32 * Math.floor(j / 2) + l] ?? 0;
            let v = j % 2 === 0 ? byte & 0xf : byte >> 4;
            if (qh) v |= (((qh[l] ?? 0) >> j) & 1) << 4;
            out[32 * j + l] = d * sc * v - dmin * m;
        }
    }
    return out;
}
