// The chains that make a tiny model's greedy answer a fixed text. With the layers' outputs scaled down, the
// current token alone decides the next one: each source token gets its own embedding axis, and the output rows
// of its successors point along that axis. A chain is therefore first order, so every token the model passes
// through must be distinct; a text that repeats a token is spelled, from the repeat on, with longer tokens of
// the model's own (see spellDistinct).
import {bpeEncode, toByteLevel, type Vocab} from "./tiny-vocab.js";

/** Source token -> successors, best first. A later one wins only where a grammar forbids the earlier ones. */
export type Chain = Map<number, number[]>;

/** What the "tool-call" model calls; `args` are written as JSON.stringify writes them, keys in their order. */
export interface ScriptedToolCall {
    name: string;
    args: Record<string, unknown>;
}

/** The syntax node-llama-cpp's QwenChatWrapper "3.5" writes around a call (its settings.functions.call). */
export const QWEN35_CALL = {
    prefix: "\n<function=",
    paramsPrefix: ">\n<parameter=params>\n",
    suffix: "\n</parameter>\n</function>\n"
} as const;

const special = (vocab: Vocab, token: string): number => {
    const id = vocab.id.get(token);
    if (id === undefined) throw new Error(`the vocabulary has no ${token}`);
    return id;
};
const lastToken = (vocab: Vocab, text: string): number => bpeEncode(text, vocab).at(-1) ?? -1;

/**
 * A token of the model's own with this byte-level text: an existing one, or one appended to the vocabulary.
 * An appended token is never produced by the tokenizer (BPE only forms tokens that merges make, and every merge
 * result is already in the vocabulary), so prompts tokenize exactly as without it; the model can still emit it.
 */
function tokenFor(vocab: Vocab, byteLevelText: string): number {
    let id = vocab.id.get(byteLevelText);
    if (id === undefined) {
        id = vocab.tokens.length;
        vocab.tokens.push(byteLevelText);
        vocab.types.push(1);
        vocab.id.set(byteLevelText, id);
    }
    return id;
}

/**
 * Spells `text` with tokens not in `used` (and adds them to it): the tokenizer's own tokens where they are
 * still free, and where one would repeat, that token joined with the next ones (or, at the end, with the
 * previous piece) into a longer token of the model's own. The model's tokens then differ from what the
 * tokenizer would make of the text, but their text is the same.
 */
export function spellDistinct(text: string, vocab: Vocab, used: Set<number>): number[] {
    const syms = bpeEncode(text, vocab).map((id) => vocab.tokens[id] ?? "");
    const isUsed = (piece: string): boolean => used.has(vocab.id.get(piece) ?? -1);
    const pieces: string[] = [];
    for (let i = 0; i < syms.length;) {
        let piece = syms[i++] ?? "";
        while (isUsed(piece) && i < syms.length) piece += syms[i++] ?? "";
        while (isUsed(piece) && pieces.length > 0) piece = (pieces.pop() ?? "") + piece;
        if (isUsed(piece)) throw new Error(`cannot spell ${JSON.stringify(text)}: it is one token, and the chain already passes through it`);
        pieces.push(piece);
        used.add(tokenFor(vocab, piece)); // a popped piece's token stays reserved: harmless, it only costs an axis
    }
    return pieces.map((p) => tokenFor(vocab, p));
}

/**
 * The tokens that end a chat prompt, where the answer starts: "\n\n" after the empty think block (thoughts
 * discouraged) and "\n" (after `<|im_start|>assistant\n` and the `<think>\n` that node-llama-cpp adds when
 * thoughts are on).
 */
function promptEnds(vocab: Vocab): {closedThought: number; openThought: number} {
    return {closedThought: lastToken(vocab, "\n\n"), openThought: lastToken(vocab, "\n")};
}

/** The prompt's end leads to the text's first token, each token to the next, the last one to <|im_end|>. */
export function answerChain(text: string, vocab: Vocab): Chain {
    if (text === "") throw new Error("the scripted text is empty");
    const {closedThought, openThought} = promptEnds(vocab);
    const ends = [...new Set([closedThought, openThought])];
    const answer = spellDistinct(text, vocab, new Set(ends));
    const chain: Chain = new Map(ends.map((e) => [e, [answer[0] ?? -1]]));
    answer.forEach((t, i) => chain.set(t, [answer[i + 1] ?? special(vocab, "<|im_end|>")]));
    return chain;
}

/**
 * A Qwen3.5 call as node-llama-cpp reads it. Greedy without functions, the model writes
 * `<tool_call>\n<function=NAME>\n<parameter=params>\n{JSON}\n</parameter>\n</function>\n</tool_call>` and ends
 * its turn. With functions, node-llama-cpp takes over after `<tool_call>\n<function=`: a grammar allows only the
 * defined names followed by "\n", node-llama-cpp then writes `>\n<parameter=params>\n` into the context itself,
 * a grammar of the function's JSON schema constrains the arguments (ended by "\n\n\n\n"), and it appends
 * `\n</parameter>\n</function>\n</tool_call>` before letting the model go on. So the chain also links:
 * the last token of that injected parameters prefix (a "\n") to the arguments' first token, as a second choice
 * that only the arguments' grammar lets win; and `</tool_call>` to <|im_end|>, which ends the response.
 * With thoughts on, the prompt ends inside `<think>\n`: from that "\n" the model thinks `I will call NAME.\n`
 * (node-llama-cpp ends a thought at "\n</think>", so the thought must end with a line break), writes `</think>`,
 * then "\n\n" starts the call as it does after an empty think block.
 */
export function toolCallChain(call: ScriptedToolCall, vocab: Vocab): Chain {
    const {name, args} = call;
    // node-llama-cpp's own rule for function names (FunctionCallNameGrammar)
    if (name === "" || /[\s]/u.test(name)) throw new Error(`tool name ${JSON.stringify(name)} must be non-empty, without spaces or line breaks`);
    if (typeof args !== "object" || args === null || Array.isArray(args)) throw new Error("tool arguments must be a JSON object");
    const argsText = JSON.stringify(args);
    const {closedThought, openThought} = promptEnds(vocab);
    const toolCall = special(vocab, "<tool_call>");
    const toolCallEnd = special(vocab, "</tool_call>");
    const thinkEnd = special(vocab, "</think>");
    const imEnd = special(vocab, "<|im_end|>");
    const anchor = lastToken(vocab, name + QWEN35_CALL.paramsPrefix);
    const used = new Set([closedThought, openThought, toolCall, toolCallEnd, thinkEnd, anchor]);
    // the fixed syntax as one token each: fewer embedding axes, and no token shared with the name or arguments
    const fixed = (text: string): number => {
        const id = tokenFor(vocab, toByteLevel(text).join(""));
        if (used.has(id)) throw new Error(`${JSON.stringify(text)} is already a token of the chain`);
        used.add(id);
        return id;
    };
    const prefix = fixed(QWEN35_CALL.prefix);
    const paramsPrefix = fixed(QWEN35_CALL.paramsPrefix);
    const suffix = fixed(QWEN35_CALL.suffix);
    const thought = fixed(`I will call ${name}.\n`);
    const nameTokens = spellDistinct(name, vocab, used);
    const argTokens = spellDistinct(argsText, vocab, used);
    const path = [toolCall, prefix, ...nameTokens, paramsPrefix, ...argTokens, suffix, toolCallEnd, imEnd];
    const chain: Chain = new Map([[closedThought, [toolCall]], [thought, [thinkEnd]], [thinkEnd, [closedThought]]]);
    path.slice(0, -1).forEach((t, i) => chain.set(t, [path[i + 1] ?? imEnd]));
    const firstArg = argTokens[0] ?? -1;
    chain.set(openThought, openThought === anchor ? [thought, firstArg] : [thought]);
    if (anchor !== openThought) chain.set(anchor, [firstArg]);
    return chain;
}
