/**
 * The conversation store on its own, in a temporary state directory: turns in order, scoped by reply
 * topic, a replayed job's turn kept once, the three bounds (count, idle time, tokens; least recently
 * used first), kept across a restart as text, damaged files dropped, and ending one. Also the request
 * fields that name a conversation.
 */
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {afterEach, beforeEach, describe, it} from "node:test";
import {ConversationStore, type ConversationLimits} from "../../src/jobs/conversations.js";
import {RequestError} from "../../src/errors.js";
import {readRequestFields, type ProtocolLimits} from "../../src/mqtt/request-fields.js";
import {memoryLogger} from "../support/fake-link.js";

const LIMITS: ProtocolLimits = {maxPayloadBytes: 65536, maxTokensCap: 2048, defaultMaxTokens: 256, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 120_000, maxStopSequences: 8, maxIdLength: 128};

describe("ConversationStore", () => {
    let dir: string;
    let now: number;
    beforeEach(() => {
        dir = mkdtempSync(join(tmpdir(), "qe-conv-"));
        now = 1_000_000;
    });
    afterEach(() => rmSync(dir, {recursive: true, force: true}));

    function open(limits: Partial<ConversationLimits> = {}): {store: ConversationStore; lines: Array<Record<string, unknown>>} {
        const {log, lines} = memoryLogger();
        const store = new ConversationStore({log, dir, now: () => now, limits: {maxCount: 8, idleMs: 60_000, maxTotalTokens: 10_000, ...limits}});
        store.open();
        return {store, lines};
    }
    const turn = (job: string, n: number, tokens = 100) => ({job, prompt: `question ${n}`, answer: `answer ${n}`, system: "be brief", tokens});

    it("keeps turns in order, per reply topic, and gives them back as messages before the new prompt", () => {
        const {store} = open();
        assert.equal(store.history("kitchen", "r/a", "j1"), null, "a new conversation has no history");
        store.record("kitchen", "r/a", turn("j1", 1));
        const info = store.record("kitchen", "r/a", {...turn("j2", 2, 180), thinking: "hmm"});
        assert.deepEqual(info, {id: "kitchen", turns: 2, tokens: 180});
        const h = store.history("kitchen", "r/a", "j3");
        assert.deepEqual(h, {system: "be brief", turns: 2, tokens: 180, awaitingResults: [], messages: [
            {role: "user", content: "question 1"}, {role: "assistant", content: "answer 1"},
            {role: "user", content: "question 2"}, {role: "assistant", content: "answer 2", thinking: "hmm"}]});
        assert.equal(store.history("kitchen", "r/b", "j3"), null, "the same name on another reply topic is another conversation");
        assert.equal(store.history("garage", "r/a", "j3"), null);
    });

    it("a replayed job runs without its own turn and records it once", () => {
        const {store} = open();
        store.record("c", "r", turn("j1", 1));
        store.record("c", "r", turn("j2", 2));
        // j2 is replayed after a crash between recording its turn and answering
        assert.equal(store.history("c", "r", "j2")?.turns, 1);
        store.record("c", "r", {...turn("j2", 2), answer: "answer 2 again"});
        const h = store.history("c", "r", "j3")!;
        assert.equal(h.turns, 2);
        assert.deepEqual(h.messages.slice(2), [{role: "user", content: "question 2"}, {role: "assistant", content: "answer 2 again"}]);
    });

    it("is kept across a restart as text, and a damaged or foreign file is dropped", () => {
        const first = open().store;
        first.record("kitchen", "r/a", turn("j1", 1));
        first.record("garage", "r/a", turn("j2", 1));
        const files = readdirSync(join(dir, "conversations"));
        assert.equal(files.length, 2);
        assert.ok(files.every((f) => readFileSync(join(dir, "conversations", f), "utf8").includes("question 1")), "kept as text");
        writeFileSync(join(dir, "conversations", files[0]!), "{\"id\": \"kit");
        writeFileSync(join(dir, "conversations", "0123.json"), JSON.stringify({id: "x", replyTopic: "r", system: null, turns: [], tokens: 0, usedAt: now}));
        writeFileSync(join(dir, "conversations", "left.json.tmp"), "half");
        const {store, lines} = open();
        assert.deepEqual(store.stats(), {count: 1, tokens: 100, evicted: 0, storageErrors: 2});
        assert.equal(lines.filter((l) => l.message === "damaged conversation file dropped").length, 2);
        assert.deepEqual(readdirSync(join(dir, "conversations")).length, 1, "the damaged, foreign and temporary files are gone");
    });

    it("forgets the least recently used past maxCount or maxTotalTokens, and any unused for idleMs", () => {
        const {store, lines} = open({maxCount: 2, maxTotalTokens: 500});
        store.record("a", "r", turn("j1", 1));
        now += 10;
        store.record("b", "r", turn("j2", 1));
        now += 10;
        store.history("a", "r", "x"); // a read is not a use: only a turn is
        store.record("a", "r", turn("j3", 2));
        now += 10;
        store.record("c", "r", turn("j4", 1));
        assert.equal(store.history("b", "r", "x"), null, "b was least recently used");
        assert.ok(store.history("a", "r", "x") !== null && store.history("c", "r", "x") !== null);
        store.record("c", "r", turn("j5", 2, 450));
        assert.equal(store.history("a", "r", "x"), null, "tokens: a goes, the one just written stays");
        assert.deepEqual(store.stats(), {count: 1, tokens: 450, evicted: 2, storageErrors: 0});
        now += 60_001;
        assert.equal(store.history("c", "r", "x"), null, "idle");
        assert.deepEqual(lines.filter((l) => l.message === "conversation forgotten").map((l) => l.reason), ["count", "tokens", "idle"]);
        assert.deepEqual(readdirSync(join(dir, "conversations")), [], "forgotten conversations leave no file");
    });

    it("ends a conversation, saying what it held; ending an unknown one is not an error", () => {
        const {store} = open();
        store.record("c", "r", turn("j1", 1));
        assert.deepEqual(store.end("c", "r"), {id: "c", turns: 1, tokens: 100, ended: true});
        assert.equal(store.history("c", "r", "x"), null);
        assert.deepEqual(store.end("c", "r"), {id: "c", turns: 0, tokens: 0, ended: true});
    });

    it("never logs prompt or answer text", () => {
        const {store, lines} = open({maxCount: 1});
        store.record("a", "r", turn("j1", 1));
        store.record("b", "r", turn("j2", 1));
        assert.ok(lines.length > 0);
        assert.ok(!JSON.stringify(lines).includes("question") && !JSON.stringify(lines).includes("answer 1"));
    });
});

describe("request fields: conversation", () => {
    const read = (obj: Record<string, unknown>) => readRequestFields(obj, LIMITS);
    const refusal = (obj: Record<string, unknown>): {field: unknown; message: string} => {
        try {
            read(obj);
        } catch (err) {
            assert.ok(err instanceof RequestError && err.code === "invalid_request");
            return {field: err.details.field, message: err.message};
        }
        assert.fail(`accepted ${JSON.stringify(obj)}`);
    };

    it("takes a conversation with a prompt, and endConversation with or without one", () => {
        assert.equal(read({prompt: "hi", conversation: "kitchen-1"}).conversation, "kitchen-1");
        assert.deepEqual([read({conversation: "k", endConversation: true}).endConversation, read({conversation: "k", endConversation: true}).prompt], [true, undefined]);
        assert.equal(read({conversation: "k", prompt: "last one", endConversation: true}).prompt, "last one");
    });

    it("refuses messages with a conversation, an endConversation without one, and bad names, saying why", () => {
        const withMessages = refusal({conversation: "k", messages: [{role: "user", content: "hi"}]});
        assert.equal(withMessages.field, "messages");
        assert.match(withMessages.message, /conversation keeps its own turns/);
        assert.equal(refusal({endConversation: true}).field, "endConversation");
        assert.match(refusal({conversation: "k"}).message, /needs prompt/, "no prompt and no end");
        assert.match(refusal({conversation: "k", endConversation: false}).message, /needs prompt/);
        for (const bad of ["", "a+b", "a#", "x".repeat(129), "\u0000", 7]) {
            const r = refusal({prompt: "hi", conversation: bad});
            assert.equal(r.field, "conversation");
            assert.match(r.message, /^conversation must/);
        }
    });
});
