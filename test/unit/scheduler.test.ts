/**
 * The Scheduler on its own, with node:test's fake clock (setTimeout and Date): FIFO into `parallel`
 * slots, deadlines while queued and while running, cancel, queue_full with its retry estimate,
 * pause/resume, and stop() (drain, then abort with reason "shutdown"). The runner stands in for the
 * engine: it ends when the test finishes the job or when its signal aborts.
 */
import assert from "node:assert/strict";
import {afterEach, beforeEach, describe, it, mock} from "node:test";
import {RequestError} from "../../src/errors.js";
import {Scheduler} from "../../src/inference/scheduler.js";
import {memoryLogger} from "../support/fake-link.js";

interface Job {id: string; deadline: number; exclusive?: string}

const T0 = 1_000_000;

/** Lets the scheduler's promise callbacks run (setImmediate is not faked). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(o: {maxQueue?: number; parallel?: number; abortIgnored?: boolean} = {}) {
    const started: Array<{id: string; queuedMs: number; signal: AbortSignal}> = [];
    const expired: Array<{id: string; reason: string}> = [];
    const finishers = new Map<string, (failure?: Error) => void>();
    const {log, lines} = memoryLogger();
    const scheduler = new Scheduler<Job>({log, maxQueue: o.maxQueue ?? 4, parallel: o.parallel ?? 1,
        run: (job, signal, queuedMs) => new Promise<void>((resolve, reject) => {
            started.push({id: job.id, queuedMs, signal});
            finishers.set(job.id, (failure) => failure ? reject(failure) : resolve());
            // The engine stops a generation when its signal aborts; `abortIgnored` plays one that does not.
            if (o.abortIgnored !== true) signal.addEventListener("abort", () => resolve());
        }),
        expire: (job, reason) => expired.push({id: job.id, reason})});
    const job = (id: string, timeoutMs = 60_000): Job => ({id, deadline: Date.now() + timeoutMs});
    const finish = async (id: string, failure?: Error): Promise<void> => {
        const done = finishers.get(id);
        assert.ok(done, `${id} is running`);
        done(failure);
        await settle();
    };
    const ids = (): string[] => started.map((s) => s.id);
    const signalOf = (id: string): AbortSignal => {
        const s = started.find((x) => x.id === id);
        assert.ok(s, `${id} started`);
        return s.signal;
    };
    return {scheduler, started, expired, job, finish, ids, signalOf, lines};
}

void describe("Scheduler", () => {
    beforeEach(() => mock.timers.enable({apis: ["setTimeout", "Date"], now: T0}));
    afterEach(() => mock.timers.reset());

    void it("runs jobs first in, first out, one slot at a time, and tells each how long it waited", async () => {
        const t = setup();
        for (const id of ["a", "b", "c"]) t.scheduler.submit(t.job(id));
        assert.deepEqual(t.ids(), ["a"]);
        assert.deepEqual(t.scheduler.stats(), {queued: 2, running: 1, completed: 0, expired: 0, rejected: 0, avgJobMs: null, paused: false});
        mock.timers.tick(300);
        await t.finish("a");
        assert.deepEqual(t.ids(), ["a", "b"]);
        assert.equal(t.started[1]?.queuedMs, 300);
        await t.finish("b");
        await t.finish("c");
        assert.deepEqual(t.ids(), ["a", "b", "c"]);
        assert.equal(t.scheduler.stats().completed, 3);
    });

    void it("runs one job of an exclusive group at a time, in order, while other jobs take the free slots", async () => {
        const t = setup({parallel: 2});
        const turn = (id: string): Job => ({...t.job(id), exclusive: "conversation-1"});
        for (const j of [turn("c1"), turn("c2"), t.job("x"), turn("c3"), t.job("y")]) t.scheduler.submit(j);
        assert.deepEqual(t.ids(), ["c1", "x"], "c2 waits for c1 although a slot is free; x takes it");
        await t.finish("x");
        assert.deepEqual(t.ids(), ["c1", "x", "y"], "the conversation's next turn still waits");
        await t.finish("c1");
        assert.deepEqual(t.ids(), ["c1", "x", "y", "c2"]);
        await t.finish("y");
        assert.deepEqual(t.ids(), ["c1", "x", "y", "c2"], "c3 waits for c2 with a slot free");
        await t.finish("c2");
        assert.deepEqual(t.ids(), ["c1", "x", "y", "c2", "c3"]);
    });

    void it("fills `parallel` slots, and a freed slot takes the next job", async () => {
        const t = setup({parallel: 2});
        for (const id of ["a", "b", "c"]) t.scheduler.submit(t.job(id));
        assert.deepEqual(t.ids(), ["a", "b"]);
        assert.equal(t.scheduler.stats().running, 2);
        await t.finish("b");
        assert.deepEqual(t.ids(), ["a", "b", "c"]);
        assert.equal(t.scheduler.stats().queued, 0);
    });

    void it("answers a queued job `timeout` at its deadline, without running it", () => {
        const t = setup();
        t.scheduler.submit(t.job("running"));
        t.scheduler.submit(t.job("late", 1000));
        mock.timers.tick(999);
        assert.deepEqual(t.expired, []);
        mock.timers.tick(1);
        assert.deepEqual(t.expired, [{id: "late", reason: "timeout"}]);
        assert.equal(t.scheduler.has("late"), false);
        assert.equal(t.scheduler.stats().expired, 1);
        assert.deepEqual(t.ids(), ["running"]);
    });

    void it("answers at once a job whose deadline has passed already (a replay after a long stop)", () => {
        const t = setup();
        t.scheduler.submit(t.job("running"));
        t.scheduler.submit({id: "old", deadline: Date.now() - 5000});
        mock.timers.tick(0);
        assert.deepEqual(t.expired, [{id: "old", reason: "timeout"}]);
    });

    void it("aborts a running job at its deadline with reason timeout, and counts it as completed", async () => {
        const t = setup();
        t.scheduler.submit(t.job("a", 2000));
        mock.timers.tick(2000);
        assert.equal(t.signalOf("a").reason, "timeout");
        await settle();
        assert.deepEqual(t.expired, [], "a job that ran is answered by its runner, not by expire");
        assert.equal(t.scheduler.stats().completed, 1);
        assert.equal(t.scheduler.stats().running, 0);
    });

    void it("cancels a queued job (expired `cancelled`) and a running one (aborted `cancelled`)", async () => {
        const t = setup();
        t.scheduler.submit(t.job("a"));
        t.scheduler.submit(t.job("b"));
        assert.equal(t.scheduler.cancel("b"), true);
        assert.deepEqual(t.expired, [{id: "b", reason: "cancelled"}]);
        assert.equal(t.scheduler.cancel("a"), true);
        assert.equal(t.signalOf("a").reason, "cancelled");
        await settle();
        assert.equal(t.scheduler.has("a"), false);
        assert.equal(t.scheduler.cancel("nobody"), false);
        mock.timers.tick(120_000);
        assert.equal(t.expired.length, 1, "a cancelled job's deadline no longer fires");
    });

    void it("refuses past maxQueue with queue_full and a retry estimate: the wait for room for one more, from the average job", async () => {
        const t = setup({maxQueue: 2});
        for (const id of ["a", "b", "c"]) t.scheduler.submit(t.job(id));
        assert.equal(t.scheduler.isFull(), true);
        const refused = (): RequestError => {
            try {
                t.scheduler.submit(t.job("over"));
            } catch (err) {
                return err as RequestError;
            }
            assert.fail("submit past maxQueue did not throw");
        };
        const first = refused();
        assert.ok(first instanceof RequestError);
        assert.equal(first.code, "queue_full");
        // No job finished yet: 5 s a job is assumed; room for one more once the running job is done.
        assert.equal(first.details.retryAfterMs, 5000);
        mock.timers.tick(200);
        await t.finish("a");
        // One 200 ms job: the queue has room (c queued of 2), the next job done in 200 ms either way.
        assert.equal(t.scheduler.stats().avgJobMs, 200);
        assert.equal(t.scheduler.retryAfterMs(), 200);
        t.scheduler.submit(t.job("d"));
        assert.equal(refused().details.retryAfterMs, 200);
        assert.equal(t.scheduler.stats().rejected, 2);
        t.scheduler.submit(t.job("forced"), {force: true});
        assert.equal(t.scheduler.stats().queued, 3, "force (a replay) goes past the limit");
    });

    void it("while paused leaves new jobs queued and lets running ones finish; resuming starts them", async () => {
        const t = setup();
        t.scheduler.submit(t.job("a"));
        t.scheduler.setPaused(true);
        t.scheduler.submit(t.job("b"));
        await t.finish("a");
        assert.deepEqual(t.ids(), ["a"]);
        assert.equal(t.scheduler.stats().paused, true);
        t.scheduler.setPaused(false);
        assert.deepEqual(t.ids(), ["a", "b"]);
        assert.equal(t.scheduler.stats().paused, false);
    });

    void it("stop(): lets a running job finish within drainMs, and leaves queued ones for the next start", async () => {
        const t = setup();
        t.scheduler.submit(t.job("a"));
        t.scheduler.submit(t.job("b", 1000));
        const stopping = t.scheduler.stop(5000);
        mock.timers.tick(300);
        await t.finish("a");
        assert.deepEqual(await stopping, {finished: 1, aborted: 0, leftQueued: 1});
        assert.equal(t.signalOf("a").aborted, false);
        mock.timers.tick(5000);
        assert.deepEqual(t.expired, [], "a job left for the next start is not answered now");
        assert.deepEqual(t.ids(), ["a"]);
        assert.throws(() => t.scheduler.submit(t.job("c")), (err: RequestError) => err.code === "shutting_down");
    });

    void it("stop(): after drainMs aborts what still runs with reason shutdown", async () => {
        const t = setup({parallel: 2});
        t.scheduler.submit(t.job("a"));
        t.scheduler.submit(t.job("b"));
        let result: unknown = null;
        void t.scheduler.stop(500).then((r) => { result = r; });
        mock.timers.tick(499);
        await settle();
        assert.equal(t.signalOf("a").aborted, false, "not before drainMs");
        mock.timers.tick(1);
        await settle();
        assert.equal(t.signalOf("a").reason, "shutdown");
        assert.equal(t.signalOf("b").reason, "shutdown");
        assert.deepEqual(result, {finished: 0, aborted: 2, leftQueued: 0});
        assert.equal(t.scheduler.stats().completed, 0, "a job stopped by shutdown is not completed: it stays in the journal");
    });

    void it("stop(): waits for an aborted job to end, however long its runner takes", async () => {
        const t = setup({abortIgnored: true});
        t.scheduler.submit(t.job("a"));
        let done = false;
        void t.scheduler.stop(100).then(() => { done = true; });
        mock.timers.tick(100);
        await settle();
        assert.equal(t.signalOf("a").reason, "shutdown");
        assert.equal(done, false);
        await t.finish("a");
        assert.equal(done, true);
    });

    void it("takeQueued(): hands back the queued jobs, whose deadlines then no longer fire", () => {
        const t = setup();
        for (const id of ["a", "b", "c"]) t.scheduler.submit(t.job(id, 1000));
        assert.deepEqual(t.scheduler.takeQueued().map((j) => j.id), ["b", "c"]);
        mock.timers.tick(2000);
        assert.deepEqual(t.expired, []);
    });

    void it("a runner that throws frees its slot for the next job, and the failure is logged", async () => {
        const t = setup();
        t.scheduler.submit(t.job("a"));
        t.scheduler.submit(t.job("b"));
        await t.finish("a", new Error("engine exploded"));
        assert.deepEqual(t.ids(), ["a", "b"]);
        await settle();
        assert.ok(t.lines.some((l) => l.message === "job runner failed" && l.id === "a"), JSON.stringify(t.lines));
    });

    // Node fires a setTimeout longer than 2^31-1 ms (24.8 days) after 1 ms, and inference.maxTimeoutMs has no
    // upper bound: the scheduler re-arms a far deadline in steps.
    void it("keeps a job whose deadline is more than 24.8 days away", () => {
        const t = setup();
        t.scheduler.submit(t.job("running"));
        t.scheduler.submit(t.job("month", 30 * 24 * 3600 * 1000));
        mock.timers.tick(1000);
        assert.deepEqual(t.expired, []);
        mock.timers.tick(25 * 24 * 3600 * 1000);
        assert.deepEqual(t.expired, [], "past the first 24.8-day step, still waiting");
        mock.timers.tick(5 * 24 * 3600 * 1000);
        assert.deepEqual(t.expired, [{id: "month", reason: "timeout"}], "and stopped at its deadline");
    });
});
