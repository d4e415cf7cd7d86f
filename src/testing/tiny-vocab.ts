// The tiny models' vocabulary: 256 byte-level tokens, BPE merges trained on our own corpus, Qwen's special
// tokens, and a byte-level BPE encoder that tokenizes as llama.cpp does (tests' chains are built on its output).

/** What the "scripted" model answers (greedy, QwenChatWrapper 3.5 with thoughts discouraged) to any chat prompt. */
export const SCRIPTED_ANSWER = "Hello from qwen-edge.";

export const SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>"
];

// Training text for the BPE merges (our own words); the scripted answer and "\n\n" are weighted so their
// merges come first and the answer always becomes a few distinct tokens.
const CORPUS = `You are a helpful assistant running on a small edge device.

The user asks a question and the assistant answers it in a short sentence.
What is the weather today? It is sunny and warm, with a light wind from the west.
Please tell me the temperature of the sensor in the kitchen.
The sensor reports twenty degrees. The device is online and the status is good.

Once upon a time there was a little robot named Tiny. Every day it read the messages and answered them.
How can I help you? Let me think about that first. Here is the answer.
{"name": "get_status", "arguments": {"device": "pump"}}
def main():
    print("hello world")
    return 0
`;

// Qwen2-style pre-tokenizer split, the same shape llama.cpp uses for qwen35
const PRE_TOKENIZER = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** GPT-2's byte -> printable character map used by byte-level BPE vocabularies. */
function byteToUnicode(): string[] {
    const map: string[] = new Array<string>(256);
    let extra = 0;
    for (let b = 0; b < 256; b++) {
        const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        map[b] = String.fromCharCode(printable ? b : 256 + extra++);
    }
    return map;
}
const BYTE_CHARS = byteToUnicode();
export const toByteLevel = (text: string): string[] => [...Buffer.from(text, "utf8")].map((b) => BYTE_CHARS[b] ?? "");
const preTokens = (text: string): string[] => text.match(PRE_TOKENIZER) ?? [];

export interface Vocab {tokens: string[]; types: number[]; merges: string[]; id: Map<string, number>}

function trainMerges(count: number): string[] {
    const words = new Map<string, {syms: string[]; n: number}>();
    const addText = (text: string, weight: number): void => {
        for (const piece of preTokens(text)) {
            const entry = words.get(piece) ?? {syms: toByteLevel(piece), n: 0};
            entry.n += weight;
            words.set(piece, entry);
        }
    };
    addText(CORPUS, 1);
    addText(SCRIPTED_ANSWER, 1000);
    addText("\n\n", 1000);
    const known = new Set(BYTE_CHARS);
    const merges: string[] = [];
    while (merges.length < count) {
        const counts = new Map<string, number>();
        for (const {syms, n} of words.values())
            for (let i = 0; i + 1 < syms.length; i++) {
                const key = `${syms[i]} ${syms[i + 1]}`;
                counts.set(key, (counts.get(key) ?? 0) + n);
            }
        let best: string | undefined;
        let bestCount = 0;
        for (const [key, n] of counts) {
            if (known.has(key.replace(" ", ""))) continue; // every merge must add a new token
            if (n > bestCount || (n === bestCount && best != null && key < best)) [best, bestCount] = [key, n];
        }
        if (best == null) break;
        const [a, b] = best.split(" ") as [string, string];
        for (const w of words.values()) {
            for (let i = 0; i + 1 < w.syms.length; i++)
                if (w.syms[i] === a && w.syms[i + 1] === b) w.syms.splice(i, 2, a + b);
        }
        merges.push(best);
        known.add(a + b);
    }
    // the corpus ran out of pairs: extend deterministically with letters appended to existing tokens
    const pool = [...BYTE_CHARS, ...merges.map((m) => m.replace(" ", ""))];
    for (let i = 0; merges.length < count; i++) {
        const base = pool[i];
        if (base == null) throw new Error("cannot generate that many merges");
        for (const c of "abcdefghijklmnopqrstuvwxyz") {
            if (merges.length >= count) break;
            if (!known.has(base + c)) {
                merges.push(`${base} ${c}`);
                known.add(base + c);
                pool.push(base + c);
            }
        }
    }
    return merges;
}

/** 256 byte tokens, `mergeCount` merged tokens, then Qwen's special tokens (control tokens). */
export function buildVocab(mergeCount: number): Vocab {
    const merges = trainMerges(mergeCount);
    const tokens = [...BYTE_CHARS, ...merges.map((m) => m.replace(" ", "")), ...SPECIAL_TOKENS];
    const types = tokens.map((_, i) => i < tokens.length - SPECIAL_TOKENS.length ? 1 : 3);
    return {tokens, types, merges, id: new Map(tokens.map((t, i) => [t, i]))};
}

/** Byte-level BPE encoding with our merges (lowest rank first), as llama.cpp does it. */
export function bpeEncode(text: string, vocab: Vocab): number[] {
    const rank = new Map(vocab.merges.map((m, i) => [m, i]));
    const ids: number[] = [];
    for (const piece of preTokens(text)) {
        const syms = toByteLevel(piece);
        for (;;) {
            let at = -1;
            let bestRank = Infinity;
            for (let i = 0; i + 1 < syms.length; i++) {
                const r = rank.get(`${syms[i]} ${syms[i + 1]}`);
                if (r != null && r < bestRank) [at, bestRank] = [i, r];
            }
            if (at < 0) break;
            syms.splice(at, 2, `${syms[at]}${syms[at + 1]}`);
        }
        for (const s of syms) ids.push(vocab.id.get(s) ?? -1);
    }
    return ids;
}
