/**
 * The model file is truncated in place while the daemon serves it (a careless copy over it, a card
 * failing under it). With the file mapped (model.mmap true) llama.cpp reads the weights from the
 * mapping, and pages past the new end of the file raise SIGBUS: the daemon dies with no log line
 * (issue 17). With model.mmap false, the default, the weights were read into memory at load. This
 * case measures both on the built daemon and records what each does now.
 */
import assert from "node:assert/strict";
import {copyFile, stat, truncate} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import {modelFile, SCRIPTED_ANSWER} from "../support/models.js";
import type {TestClient} from "../support/mqtt-client.js";
import {faultCase} from "../support/reliability.js";

interface Outcome {
    /** the answer after the truncation, or null when the daemon died first */
    answer: string | null;
    exit: {code: number | null; signal: NodeJS.Signals | null} | null;
    /** log lines the daemon wrote after the truncation (none when it died silently) */
    linesAfter: number;
    /** their messages */
    after: string[];
    stderr: string;
    /** the journaled request's answer after a restart, when the daemon died */
    afterRestart?: string;
    restartReason?: string;
}

describe("faults: the model file is truncated under a running daemon", () => {
    let h: Harness;
    let client: TestClient;

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-model-live-", subscribe: ["qwen-edge/+/status", "m/#"]});
        client = h.client;
    });
    after(() => h?.dispose());

    const ask = (device: string, id: string): Promise<void> =>
        client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, prompt: "hi", maxTokens: 16, replyTo: `m/${id}`}));
    const answer = (id: string, timeoutMs: number): Promise<string> =>
        client.waitFor(`the answer to ${id}`, (m) => m.topic === `m/${id}`, timeoutMs).then((m) => String(m.json?.text ?? m.json?.status));

    /** Serves one request, truncates the model file to a tenth, asks again: an answer, or the daemon's death. */
    const truncatedUnder = async (mmap: boolean): Promise<Outcome & {bytes: number}> => {
        const device = `fault-model-live-${mmap ? "mmap" : "read"}`;
        const path = join(h.dir, `${device}.gguf`);
        await copyFile(await modelFile("scripted"), path);
        const bytes = (await stat(path)).size;
        const stateDir = join(h.dir, `${device}-state`);
        const d: DaemonProcess = await h.start({device, model: "none", stateDir, args: ["--model-path", path, "--model-mmap", String(mmap)]});
        await ask(device, `${device}-before`);
        assert.equal(await answer(`${device}-before`, 10_000), SCRIPTED_ANSWER);
        const logged = d.logs.length;
        await truncate(path, Math.floor(bytes / 10));
        await ask(device, `${device}-after`);
        const died = d.exited.then((exit) => ({exit, answer: null}));
        const answered = answer(`${device}-after`, 15_000).then((text) => ({exit: null, answer: text}));
        const first = await Promise.race([died, answered]);
        const after = d.logs.slice(logged);
        const outcome: Outcome & {bytes: number} = {...first, bytes, linesAfter: after.length, after: after.map((l) => String(l.message)),
            stderr: d.stderr().trim().split("\n").at(-1) ?? ""};
        if (first.exit === null) assert.deepEqual(await d.term(), {code: 0, signal: null});
        else {
            // the request accepted before the death is in the journal: the next start answers it (the file is checked then)
            const since = Date.now();
            const again = await h.spawn({device, model: "none", stateDir, args: ["--model-path", path, "--model-mmap", String(mmap)]});
            outcome.afterRestart = (await client.waitFor(`the answer to ${device}-after after the restart`, (m) => m.topic === `m/${device}-after`,
                30_000).then((m) => (m.json?.error as {code?: string} | undefined)?.code ?? String(m.json?.status)));
            outcome.restartReason = String((await client.waitFor(`${device} degraded after the restart`, (m) => m.topic === `qwen-edge/${device}/status`
                && m.at >= since && m.json?.state === "degraded", 30_000)).json?.reason).replaceAll(h.dir, "<tmp>");
            assert.deepEqual(await again.term(), {code: 0, signal: null});
        }
        return outcome;
    };

    faultCase("M01", async (row) => {
        row.inject("the model file (model.path, a tiny scripted qwen35) truncated in place to a tenth of its size while the daemon serves it, "
            + "then a request; once with model.mmap false (the default), once with model.mmap true");
        const read = await truncatedUnder(false);
        const mapped = await truncatedUnder(true);
        const said = (o: Outcome): string => o.answer !== null ? `answered ${JSON.stringify(o.answer)} and stayed up`
            : `died (${o.exit?.signal ?? `exit ${String(o.exit?.code)}`}); its log after the truncation: ${o.after.map((m) => JSON.stringify(m)).join(", ")}`
                + `, nothing on stderr${o.stderr === "" ? "" : ` but ${JSON.stringify(o.stderr.slice(0, 120))}`}`;
        // the mapped daemon's request counts as answered when its restart answered it
        row.replies(2, (read.answer !== null ? 1 : 0) + (mapped.answer !== null || mapped.afterRestart !== undefined ? 1 : 0), 0);
        row.figure("model file (bytes)", read.bytes);
        row.figure("model.mmap false", said(read));
        row.figure("model.mmap true", said(mapped));
        row.figure("model.mmap true, after a restart: the request accepted before the death", mapped.afterRestart ?? "–");
        row.figure("status after the restart", mapped.restartReason ?? "–");
        row.observe(`model.mmap false (the default): the weights are in memory; the daemon ${said(read)}. The next start checks the file `
            + "and comes up degraded (as the mapped run's restart shows). model.mmap true: the daemon " + said(mapped)
            + (mapped.answer === null ? `; restarted (as systemd would), it found the file truncated, came up degraded and answered the `
                + `journaled request ${String(mapped.afterRestart)}. A documented limit of mapping the model (README, "How the model is chosen")` : ""));

        assert.equal(read.answer, SCRIPTED_ANSWER, "with the model read into memory, a truncated file does not matter until the next load");
        // What mapping does now: recorded, and held, so a change in either direction shows here.
        assert.equal(mapped.exit?.signal, "SIGBUS", `model.mmap true: ${said(mapped)}`);
        assert.equal(mapped.afterRestart, "model_unavailable", "the request accepted before the death is answered after the restart");
    });
});
