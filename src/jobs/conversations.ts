/**
 * Conversations: the turns a device keeps so that a client sends only its new prompt (issue 15,
 * docs/PROMPT-REUSE.md). A conversation is named by the request's `conversation` and scoped, like a
 * request id, by the topic its answers go to (conversationKey): another client naming the same
 * conversation on its own reply topic gets a conversation of its own, never this one's turns.
 *
 * Kept as text, one file per conversation in the state directory (written whole, fsync'd, renamed),
 * read back at start; after a restart the history is evaluated again when next used. Bounded three
 * ways, the least recently used going first: how many (maxCount), how long unused (idleMs), and the
 * tokens all of them hold (maxTotalTokens; a conversation's tokens are its last turn's prompt plus
 * answer). A conversation is never cut short on its own: when its history no longer fits the context
 * the request is refused with the numbers (pipeline.ts), and the client ends it.
 *
 * Exactly once: every turn records the job key that made it. A job replayed after a crash between
 * recording its turn and answering runs on the history without its own turn and records it again in
 * place, so a turn is never kept twice. The scheduler runs one job per conversation at a time, in order.
 *
 * File I/O is synchronous for the reason the job store's is (store.ts): the one libuv thread decodes.
 */
import {createHash} from "node:crypto";
import {mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync, renameSync} from "node:fs";
import {join} from "node:path";
import type {Logger} from "../log.js";
import type {ChatMessage, ToolCall} from "../inference/generation.js";
import type {ConversationInfo} from "../mqtt/protocol.js";
import {idProblem, isPlainObject} from "../mqtt/request-fields.js";
import {describeError} from "../errors.js";
import {syncDir} from "../util/fs.js";

export interface ConversationLimits {
    /** conversations kept at most */
    maxCount: number;
    /** a conversation unused for this long is forgotten */
    idleMs: number;
    /** tokens all conversations hold together */
    maxTotalTokens: number;
}

export interface Turn {
    /** the job (jobKey) that made this turn */
    job: string;
    /** the user's prompt; absent when the turn continued from the results of the previous turn's calls */
    prompt?: string;
    /** the results of the previous turn's tool calls this turn continued from */
    toolResults?: Array<{toolCallId: string; content: string}>;
    answer: string;
    /** the thought text, when the turn thought: rendered again as it was evaluated (prefix reuse) */
    thinking?: string;
    /** the client's tools this answer called: the next turn brings their results */
    toolCalls?: ToolCall[];
}

interface Conversation {
    id: string;
    replyTopic: string;
    /** the system prompt the conversation runs with; null: the device's default */
    system: string | null;
    turns: Turn[];
    /** tokens of the last turn's prompt and answer: what the history costs the context */
    tokens: number;
    usedAt: number;
}

/** A conversation's history, ready to prepend to a new prompt. */
export interface History {
    system: string | null;
    messages: ChatMessage[];
    turns: number;
    tokens: number;
    /** the ids of the last turn's tool calls, which the next request must answer (toolResults); [] when none */
    awaitingResults: string[];
}

export interface ConversationStats {
    count: number;
    tokens: number;
    /** forgotten for a bound, since start: count, idle, tokens */
    evicted: number;
    /** conversation files that could not be written (kept in memory) or read back (dropped) */
    storageErrors: number;
}

export interface ConversationStoreDeps {
    log: Logger;
    /** the state directory; conversations go in its `conversations/` */
    dir: string;
    limits: ConversationLimits;
    /** test seam */
    now?: () => number;
}

/** A conversation's key: its name, scoped by the topic its answers go to. */
export function conversationKey(id: string, replyTopic: string): string {
    return JSON.stringify([id, replyTopic]);
}

/** Defaults: enough for a household of devices talking, small next to any model. */
export const DEFAULT_CONVERSATION_LIMITS: ConversationLimits = {maxCount: 64, idleMs: 24 * 3_600_000, maxTotalTokens: 262_144};

export class ConversationStore {
    private readonly deps: ConversationStoreDeps;
    private readonly dir: string;
    /** in least-recently-used order: Map keeps insertion order, and a use re-inserts */
    private readonly conversations = new Map<string, Conversation>();
    private evicted = 0;
    private storageErrors = 0;

    public constructor(deps: ConversationStoreDeps) {
        this.deps = deps;
        this.dir = join(deps.dir, "conversations");
    }

    /** Reads the kept conversations; damaged files are dropped (and counted), expired ones forgotten. */
    public open(): void {
        mkdirSync(this.dir, {recursive: true});
        const loaded: Conversation[] = [];
        for (const name of readdirSync(this.dir)) {
            const path = join(this.dir, name);
            if (name.endsWith(".tmp")) {
                rmSync(path, {force: true});
                continue;
            }
            if (!name.endsWith(".json")) continue;
            const conversation = readConversation(path);
            if (conversation === null || fileName(conversationKey(conversation.id, conversation.replyTopic)) !== name) {
                this.storageErrors++;
                this.deps.log.warn("damaged conversation file dropped", {file: name});
                rmSync(path, {force: true});
                continue;
            }
            loaded.push(conversation);
        }
        loaded.sort((a, b) => a.usedAt - b.usedAt);
        for (const c of loaded) this.conversations.set(conversationKey(c.id, c.replyTopic), c);
        this.enforce(null);
        if (this.conversations.size > 0) this.deps.log.info("conversations kept", {count: this.conversations.size, tokens: this.totalTokens()});
    }

    /**
     * The history a job runs on: every turn but one the job itself made (a replay), or null when the
     * conversation is new (or was forgotten).
     */
    public history(id: string, replyTopic: string, job: string): History | null {
        const c = this.live(conversationKey(id, replyTopic));
        if (!c) return null;
        const turns = c.turns.filter((t) => t.job !== job);
        const messages: ChatMessage[] = turns.flatMap((t): ChatMessage[] => [
            ...(t.prompt !== undefined ? [{role: "user" as const, content: t.prompt}] : []),
            ...(t.toolResults ?? []).map((r) => ({role: "tool" as const, content: r.content, toolCallId: r.toolCallId})),
            {role: "assistant", content: t.answer, ...(t.thinking !== undefined ? {thinking: t.thinking} : {}),
                ...(t.toolCalls !== undefined && t.toolCalls.length > 0 ? {toolCalls: t.toolCalls} : {})}]);
        const last = turns.at(-1);
        return {system: c.system, messages, turns: turns.length, tokens: turns.length === c.turns.length ? c.tokens : 0,
            awaitingResults: (last?.toolCalls ?? []).map((call) => call.id)};
    }

    /** Adds (or, for a replayed job, replaces) a turn; returns what the conversation is now. */
    public record(id: string, replyTopic: string, turn: Turn & {system: string | null; tokens: number}): ConversationInfo {
        const key = conversationKey(id, replyTopic);
        const c = this.live(key) ?? {id, replyTopic, system: null, turns: [], tokens: 0, usedAt: 0};
        const {system, tokens, ...kept} = turn;
        c.turns = [...c.turns.filter((t) => t.job !== turn.job), kept];
        c.system = system;
        c.tokens = tokens;
        c.usedAt = this.now();
        this.conversations.delete(key);
        this.conversations.set(key, c);
        this.write(key, c);
        this.enforce(key);
        return {id, turns: c.turns.length, tokens: c.tokens};
    }

    /** Forgets a conversation; what it held (0 turns when there was none). */
    public end(id: string, replyTopic: string): ConversationInfo {
        const key = conversationKey(id, replyTopic);
        const c = this.live(key);
        this.remove(key);
        return {id, turns: c?.turns.length ?? 0, tokens: c?.tokens ?? 0, ended: true};
    }

    /** false when conversations.maxCount is 0: requests naming one are refused */
    public get enabled(): boolean {
        return this.deps.limits.maxCount > 0;
    }

    public stats(): ConversationStats {
        this.enforce(null);
        return {count: this.conversations.size, tokens: this.totalTokens(), evicted: this.evicted, storageErrors: this.storageErrors};
    }

    private live(key: string): Conversation | null {
        const c = this.conversations.get(key);
        if (!c) return null;
        if (this.now() - c.usedAt > this.deps.limits.idleMs) {
            this.evict(key, "idle");
            return null;
        }
        return c;
    }

    /** The bounds, least recently used first; `keep` (the conversation just written) is never the one to go. */
    private enforce(keep: string | null): void {
        const {maxCount, idleMs, maxTotalTokens} = this.deps.limits;
        const now = this.now();
        for (const [key, c] of [...this.conversations]) if (key !== keep && now - c.usedAt > idleMs) this.evict(key, "idle");
        for (const key of [...this.conversations.keys()]) {
            if (this.conversations.size <= maxCount && this.totalTokens() <= maxTotalTokens) break;
            if (key === keep) continue;
            this.evict(key, this.conversations.size > maxCount ? "count" : "tokens");
        }
    }

    private evict(key: string, reason: "idle" | "count" | "tokens"): void {
        const c = this.conversations.get(key);
        if (!c) return;
        this.evicted++;
        this.deps.log.info("conversation forgotten", {conversation: c.id, reason, turns: c.turns.length, tokens: c.tokens,
            idleMs: this.now() - c.usedAt});
        this.remove(key);
    }

    private remove(key: string): void {
        this.conversations.delete(key);
        try {
            rmSync(join(this.dir, fileName(key)), {force: true});
        } catch (err) {
            this.storageErrors++;
            this.deps.log.warn("conversation file not removed", {file: fileName(key), ...describeError(err)});
        }
    }

    private write(key: string, c: Conversation): void {
        const path = join(this.dir, fileName(key));
        const tmp = `${path}.tmp`;
        try {
            writeFileSync(tmp, JSON.stringify(c));
            const fd = openSync(tmp, "r");
            try {
                fsyncSync(fd);
            } finally {
                closeSync(fd);
            }
            renameSync(tmp, path);
            syncDir(this.dir);
        } catch (err) {
            // The turn stays in memory and serves until a restart; the reply is not held back for it.
            this.storageErrors++;
            rmSync(tmp, {force: true});
            this.deps.log.error("conversation not saved; kept in memory until a restart", {conversation: c.id, ...describeError(err)});
        }
    }

    private totalTokens(): number {
        let sum = 0;
        for (const c of this.conversations.values()) sum += c.tokens;
        return sum;
    }

    private now(): number {
        return this.deps.now?.() ?? Date.now();
    }
}

function fileName(key: string): string {
    return `${createHash("sha256").update(key).digest("hex").slice(0, 32)}.json`;
}

/** A conversation file as this store writes it, or null. */
function readConversation(path: string): Conversation | null {
    let value: unknown;
    try {
        value = JSON.parse(readFileSync(path, "utf8"));
    } catch {
        return null;
    }
    if (!isPlainObject(value)) return null;
    const {id, replyTopic, system, turns, tokens, usedAt} = value;
    if (typeof id !== "string" || idProblem(id, 1024) !== null || typeof replyTopic !== "string" || replyTopic === "") return null;
    if (system !== null && typeof system !== "string") return null;
    if (typeof tokens !== "number" || !Number.isSafeInteger(tokens) || tokens < 0 || typeof usedAt !== "number" || !Number.isFinite(usedAt)) return null;
    if (!Array.isArray(turns)) return null;
    const read: Turn[] = [];
    for (const t of turns as unknown[]) {
        if (!isPlainObject(t) || typeof t.job !== "string" || typeof t.answer !== "string") return null;
        if ((t.prompt !== undefined && typeof t.prompt !== "string") || (t.thinking !== undefined && typeof t.thinking !== "string")) return null;
        const toolCalls = t.toolCalls === undefined ? undefined : readCalls(t.toolCalls);
        const toolResults = t.toolResults === undefined ? undefined : readResults(t.toolResults);
        if (toolCalls === null || toolResults === null || (t.prompt === undefined && toolResults === undefined)) return null;
        read.push({job: t.job, answer: t.answer, ...(typeof t.prompt === "string" ? {prompt: t.prompt} : {}),
            ...(toolResults ? {toolResults} : {}), ...(typeof t.thinking === "string" ? {thinking: t.thinking} : {}), ...(toolCalls ? {toolCalls} : {})});
    }
    return {id, replyTopic, system, turns: read, tokens, usedAt};
}

function readCalls(value: unknown): ToolCall[] | null {
    if (!Array.isArray(value)) return null;
    const calls: ToolCall[] = [];
    for (const c of value as unknown[]) {
        if (!isPlainObject(c) || typeof c.id !== "string" || typeof c.name !== "string" || !isPlainObject(c.arguments)) return null;
        calls.push({id: c.id, name: c.name, arguments: c.arguments});
    }
    return calls;
}

function readResults(value: unknown): Array<{toolCallId: string; content: string}> | null {
    if (!Array.isArray(value)) return null;
    const results: Array<{toolCallId: string; content: string}> = [];
    for (const r of value as unknown[]) {
        if (!isPlainObject(r) || typeof r.toolCallId !== "string" || typeof r.content !== "string") return null;
        results.push({toolCallId: r.toolCallId, content: r.content});
    }
    return results;
}
