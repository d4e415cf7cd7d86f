/**
 * The stream coalescer with a fake clock: the first delta at once, later ones batched per interval,
 * an early flush past maxPendingChars, answer and thought text never mixed in one chunk, and close()
 * emitting the rest; the chunks always join to exactly what was pushed, numbered from 0.
 */
import assert from "node:assert/strict";
import {afterEach, beforeEach, describe, it, mock} from "node:test";
import {StreamCoalescer, type StreamPart} from "../../src/inference/stream.js";

interface Chunk {seq: number; delta: string; part: StreamPart; at: number}

function coalescer(intervalMs = 50, maxPendingChars?: number): {c: StreamCoalescer; chunks: Chunk[]} {
    const chunks: Chunk[] = [];
    const c = new StreamCoalescer({intervalMs, ...(maxPendingChars !== undefined ? {maxPendingChars} : {}),
        emit: (seq, delta, part) => chunks.push({seq, delta, part, at: Date.now()})});
    return {c, chunks};
}

void describe("StreamCoalescer", () => {
    beforeEach(() => mock.timers.enable({apis: ["setTimeout", "Date"], now: 0}));
    afterEach(() => mock.timers.reset());

    void it("sends the first delta at once", () => {
        const {c, chunks} = coalescer();
        c.push("Hel");
        assert.deepEqual(chunks, [{seq: 0, delta: "Hel", part: "text", at: 0}]);
    });

    void it("batches the deltas that follow within the interval into one chunk, sent when the interval ends", () => {
        const {c, chunks} = coalescer(50);
        c.push("a");
        mock.timers.tick(10);
        c.push("b");
        mock.timers.tick(10);
        c.push("c");
        mock.timers.tick(29);
        assert.equal(chunks.length, 1, "nothing before the interval since the last chunk ends");
        mock.timers.tick(1);
        assert.deepEqual(chunks.map((x) => [x.seq, x.delta, x.at]), [[0, "a", 0], [1, "bc", 50]]);
    });

    void it("sends a delta at once when the interval has already passed", () => {
        const {c, chunks} = coalescer(50);
        c.push("a");
        mock.timers.tick(80);
        c.push("b");
        assert.deepEqual(chunks.map((x) => x.delta), ["a", "b"]);
    });

    void it("sends early when maxPendingChars are waiting", () => {
        const {c, chunks} = coalescer(50, 8);
        c.push("first");
        c.push("1234");
        assert.equal(chunks.length, 1);
        c.push("5678");
        assert.deepEqual(chunks.map((x) => x.delta), ["first", "12345678"]);
    });

    void it("never mixes thought and answer text in one chunk: a change of part sends what waits", () => {
        const {c, chunks} = coalescer(50);
        c.push("hmm", "thinking");
        c.push(" so", "thinking");
        c.push("Yes", "text");
        c.push(".", "text");
        c.close();
        assert.deepEqual(chunks.map((x) => [x.seq, x.part, x.delta]), [[0, "thinking", "hmm"], [1, "thinking", " so"], [2, "text", "Yes."]]);
    });

    void it("close() sends what is left, at once, and nothing fires after it", () => {
        const {c, chunks} = coalescer(50);
        c.push("a");
        c.push("b");
        c.close();
        assert.deepEqual(chunks.map((x) => x.delta), ["a", "b"]);
        mock.timers.tick(1000);
        assert.equal(chunks.length, 2);
        c.close();
        assert.equal(chunks.length, 2, "a close with nothing waiting sends nothing");
    });

    void it("joins to exactly the pushed text, numbered from 0, whatever the timing", () => {
        let seed = 7;
        const random = (n: number): number => {
            seed = (seed * 1103515245 + 12345) % 2 ** 31;
            return seed % n;
        };
        const {c, chunks} = coalescer(50, 64);
        const pushed: Record<StreamPart, string> = {text: "", thinking: ""};
        for (let i = 0; i < 500; i++) {
            const part: StreamPart = i < 120 ? "thinking" : "text";
            const delta = "x".repeat(random(12)) + String(i);
            pushed[part] += delta;
            c.push(delta, part);
            mock.timers.tick(random(40));
        }
        c.close();
        assert.deepEqual(chunks.map((x) => x.seq), chunks.map((_, i) => i));
        for (const part of ["thinking", "text"] as const) assert.equal(chunks.filter((x) => x.part === part).map((x) => x.delta).join(""), pushed[part]);
        assert.ok(chunks.length < 500, `coalesced: ${chunks.length} chunks for 500 deltas`);
    });
});
