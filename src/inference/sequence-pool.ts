/**
 * The context's sequences, kept warm between requests so that evaluated prompts are reused (prefix
 * reuse, as llama-server's cache_prompt). A request goes to the free sequence whose tokens share the
 * longest prefix with its prompt; the prompt's stable head (the system prompt and every earlier turn,
 * all but the last user message) is evaluated there first and checkpointed, then the chat runs on top
 * of it and evaluates only what is new.
 *
 * Qwen3.5 is hybrid: its Gated DeltaNet layers carry a recurrent state that cannot be cut back to an
 * earlier token, so reusing a prefix of what a sequence holds needs a checkpoint of that state at or
 * before the point where the new prompt diverges (node-llama-cpp's sequence checkpoints, since 3.18).
 * Measured on the real-shape 0.8B (docs/PROMPT-REUSE.md): without a checkpoint at the shared head the
 * second request re-evaluates everything; with one, 20-30 of ~1,080 prompt tokens. Each checkpoint holds
 * one recurrent state (19.3 MiB for 0.8B and 2B); `checkpoints` per sequence bounds them, and the memory
 * plan counts them (src/models/catalog.ts).
 */
import type {LlamaContext, LlamaContextSequence, Token} from "node-llama-cpp";

/** A head shorter than this is not worth a checkpoint (it evaluates in well under a second anywhere). */
const MIN_HEAD_TOKENS = 32;

export interface PoolStats {
    /** requests that reused evaluated tokens */
    hits: number;
    /** requests that evaluated their whole prompt */
    misses: number;
    /** prompt tokens taken from an evaluated prefix instead of evaluated again */
    reusedTokens: number;
    /** memory held by checkpoints now, all sequences */
    checkpointBytes: number;
}

interface Slot {
    sequence: LlamaContextSequence;
    busy: boolean;
    /** when it last served a request (the least recently used one is given up first) */
    usedAt: number;
    /** the tokens our checkpoint at the last prompt head covers (0: none); see restorable() */
    head: number;
}

export class SequencePool {
    private readonly slots: Slot[] = [];
    private hits = 0;
    private misses = 0;
    private reusedTokens = 0;
    private uses = 0;

    /**
     * `checkpoints`: how many evaluated-prompt checkpoints each sequence keeps (0: no reuse; every
     * request starts from a cleared sequence). node-llama-cpp keeps at most that many of its unnamed
     * checkpoints (ours at the head, and its own as generation starts and after it ends: three a request,
     * hence the default 3) plus one of each of its named ones (chat start, grammar end): the memory plan
     * counts `checkpoints` + 2 states per sequence. Checkpoints past the point where a new prompt diverges
     * are dropped as it is evaluated. No byte limit: node-llama-cpp prunes the oldest checkpoint first
     * under one, and that is the head's.
     */
    public constructor(context: LlamaContext, count: number, private readonly checkpoints: number) {
        for (let i = 0; i < count; i++) {
            const sequence = context.getSequence(checkpoints > 0 ? {checkpoints: {max: checkpoints, interval: false, maxMemory: null}} : {});
            this.slots.push({sequence, busy: false, usedAt: 0, head: 0});
        }
    }

    public get reuse(): boolean {
        return this.checkpoints > 0;
    }

    public get busy(): number {
        return this.slots.filter((s) => s.busy).length;
    }

    /**
     * The free sequence that can give `prompt` the most evaluated tokens (its shared prefix, back to a
     * checkpoint); when none can give a useful part, the least recently used one, so that the prefixes
     * other requests share are kept (null: none free).
     */
    public acquire(prompt: readonly Token[]): LlamaContextSequence | null {
        const free = this.slots.filter((s) => !s.busy);
        let best: Slot | null = null;
        let bestReuse = MIN_HEAD_TOKENS - 1;
        if (this.reuse) {
            for (const slot of free) {
                const reuse = restorable(slot, prompt);
                if (reuse > bestReuse) [best, bestReuse] = [slot, reuse];
            }
        }
        best ??= free.reduce<Slot | null>((lru, s) => (lru === null || s.usedAt < lru.usedAt ? s : lru), null);
        if (!best) return null;
        // a prompt that diverges before the head checkpoint: evaluating it drops that checkpoint
        if (sharedPrefix(best.sequence.contextTokens, prompt) < best.head) best.head = 0;
        best.busy = true;
        best.usedAt = ++this.uses;
        return best.sequence;
    }

    /**
     * Brings the sequence to the prompt's stable head (its first `head` tokens: what the next request
     * with the same system prompt or history will share) and checkpoints it there, so this and later
     * requests start from it. The chat then evaluates only what follows.
     */
    public async prepare(sequence: LlamaContextSequence, prompt: readonly Token[], head: number): Promise<void> {
        if (!this.reuse || head < MIN_HEAD_TOKENS) return;
        const headTokens = prompt.slice(0, head);
        await sequence.adaptStateToTokens(headTokens, false);
        const rest = headTokens.slice(sequence.nextTokenIndex);
        if (rest.length > 0) await sequence.evaluateWithoutGeneratingNewTokens(rest);
        await sequence.takeCheckpoint();
        const slot = this.slots.find((s) => s.sequence === sequence);
        if (slot) slot.head = head;
    }

    /** Counts a request's reuse (for health and /metrics). */
    public record(reused: number): void {
        if (reused > 0) this.hits++;
        else this.misses++;
        this.reusedTokens += reused;
    }

    /** Returns the sequence; its tokens stay for the next request unless `clear` (after an error, or with reuse off). */
    public async release(sequence: LlamaContextSequence, clear: boolean): Promise<void> {
        if (clear || !this.reuse) await sequence.clearHistory().catch(() => undefined);
        const slot = this.slots.find((s) => s.sequence === sequence);
        if (slot) {
            slot.busy = false;
            if (clear || !this.reuse) slot.head = 0;
        }
    }

    public stats(): PoolStats {
        return {hits: this.hits, misses: this.misses, reusedTokens: this.reusedTokens,
            checkpointBytes: this.slots.reduce((sum, s) => sum + s.sequence.checkpointsMemoryUsage, 0)};
    }
}

/**
 * Tokens of `prompt` a slot's sequence can give without evaluating: the shared prefix, back to the last
 * checkpoint in it. node-llama-cpp 3.21.1's getRestoreToPrefixIndexEvaluationSize() looks only at the newest
 * checkpoint (one past the index makes it answer "evaluate everything", although the restore itself, which
 * first drops the checkpoints past the index, uses an earlier one), so the checkpoint we took at the prompt
 * head counts too. Found with parallel 2: every sequence looked equally useless and a repeated prompt went to
 * the other one (test/integration/prompt-reuse.test.ts, the real-scale tier).
 */
function restorable(slot: Slot, prompt: readonly Token[]): number {
    const sequence = slot.sequence;
    const shared = Math.min(sharedPrefix(sequence.contextTokens, prompt), prompt.length - 1);
    if (shared <= 0) return 0;
    const evaluate = sequence.getRestoreToPrefixIndexEvaluationSize(shared - 1);
    const newest = evaluate < 0 ? 0 : shared - evaluate;
    return Math.max(newest, slot.head <= shared ? slot.head : 0);
}

export function sharedPrefix(a: readonly Token[], b: readonly Token[]): number {
    const n = Math.min(a.length, b.length);
    let i = 0;
    while (i < n && a[i] === b[i]) i++;
    return i;
}
