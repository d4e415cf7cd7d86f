/**
 * The fault suite's collector. Each fault or load case records what was injected, what was observed
 * and its figures into one JSON file per case; `reliability-report.ts` turns the files into the
 * report after the suite (dist/test-results/RELIABILITY.md; docs/RELIABILITY.md with `npm run
 * reliability:report`). Files, not memory: node --test runs every test file in its own process.
 */
import {mkdirSync, writeFileSync} from "node:fs";
import {join} from "node:path";
import {fileURLToPath} from "node:url";
import {it, type TestContext} from "node:test";

export type Figure = string | number | boolean | null;

export interface CaseRecord {
    id: string;
    title: string;
    injected: string;
    observed: string[];
    /** replies the case expects and receives (final replies, streamed chunks not counted) */
    expected: number | null;
    received: number | null;
    duplicates: number | null;
    recoverMs: number | null;
    figures: Record<string, Figure>;
    outcome: "pass" | "fail" | "skip";
    error: string | null;
    durationMs: number;
    at: string;
}

/**
 * Every case of the suite, in report order: a case whose file crashed before recording still gets a
 * row ("no result") instead of silently disappearing from the document.
 */
export const CASES: ReadonlyArray<{id: string; title: string}> = [
    {id: "F01", title: "Broker restart mid-generation"},
    {id: "F02", title: "Network drop, half-open connection"},
    {id: "F03", title: "SIGTERM mid-generation"},
    {id: "F04", title: "SIGKILL mid-generation, then restart"},
    {id: "F05", title: "Model file missing"},
    {id: "F06", title: "Model file truncated"},
    {id: "F07", title: "Model file with flipped bytes, same size"},
    {id: "F08", title: "Flipped bytes, mtime restored (bit rot)"},
    {id: "F09", title: "Flipped bytes in the header, model.path, no sha256"},
    {id: "F10", title: "Disk full while downloading"},
    {id: "F11", title: "Job store damaged"},
    {id: "L01", title: "200 requests at once, maxQueue 32"},
    {id: "L02", title: "1,000 malformed + 20 valid messages"},
    // issue 17: hostile input (H), storage (S), the model file under a running daemon (M)
    {id: "H01", title: "Reply topic with a Unicode noncharacter"},
    {id: "H02", title: "Reply topic too long for the broker's max_packet_size"},
    {id: "H03", title: "25 requests with a 5,000-level jsonSchema"},
    {id: "H04", title: "Replies aimed at forbidden topics"},
    {id: "H05", title: "Route flood over 60 source topics"},
    {id: "S01", title: "State directory full"},
    {id: "S02", title: "State directory read-only"},
    {id: "S03", title: "Torn journal record (disk full mid-write), then SIGKILL"},
    {id: "S04", title: "Journal bytes per request byte"},
    {id: "S05", title: "State filesystem turned read-only under the running daemon"},
    {id: "M01", title: "Model file truncated in place while loaded"},
    // issue 16: delivery (D)
    {id: "D01", title: "Requests queued at the broker while the daemon is stopped"},
    {id: "D02", title: "10 SIGKILLs and restarts under a steady request stream"},
    {id: "D03", title: "5 SIGTERMs and restarts under a steady request stream"},
    {id: "D04", title: "10 SIGKILLs under a steady stream, inference.parallel 2"},
    {id: "D05", title: "An id sent again; a retained request across a restart"},
    {id: "D06", title: "10 SIGKILLs, each the moment a final reply arrives"},
    {id: "D07", title: "A fleet of 3: one stopped cleanly, one slow"},
    {id: "D08", title: "A fleet member that dies: what Mosquitto does with its share"}
];

export function resultsDir(): string {
    return process.env.QE_FAULT_RESULTS ?? fileURLToPath(new URL("../faults-results/", import.meta.url));
}

/** What a case fills in while it runs. */
export class CaseRow {
    public readonly record: CaseRecord;

    public constructor(id: string, title: string, private readonly t: TestContext) {
        this.record = {id, title, injected: "", observed: [], expected: null, received: null, duplicates: null, recoverMs: null,
            figures: {}, outcome: "pass", error: null, durationMs: 0, at: new Date().toISOString()};
    }

    public inject(text: string): void {
        this.record.injected = text;
    }

    public observe(text: string): void {
        this.record.observed.push(text);
    }

    public figure(name: string, value: Figure): void {
        this.record.figures[name] = typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 100) / 100 : value;
    }

    public replies(expected: number, received: number, duplicates: number): void {
        Object.assign(this.record, {expected, received, duplicates});
    }

    public recovered(ms: number): void {
        this.record.recoverMs = Math.round(ms);
    }

    /** Skips the case (e.g. no root for a mount namespace), saying why in the report. */
    public skip(reason: string): void {
        this.record.outcome = "skip";
        this.record.error = reason;
        this.t.skip(reason);
    }
}

/** An `it` that records its row whatever happens: a failing case is a row marked as failed. */
export function faultCase(id: string, fn: (row: CaseRow, t: TestContext) => Promise<void>): void {
    const known = CASES.find((c) => c.id === id);
    if (!known) throw new Error(`unknown fault case ${id}: add it to CASES`);
    it(`${id} ${known.title}`, async (t) => {
        const row = new CaseRow(id, known.title, t);
        const started = Date.now();
        try {
            await fn(row, t);
        } catch (err) {
            row.record.outcome = "fail";
            row.record.error = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 300);
            throw err;
        } finally {
            row.record.durationMs = Date.now() - started;
            const dir = resultsDir();
            mkdirSync(dir, {recursive: true});
            writeFileSync(join(dir, `${id}.json`), JSON.stringify(row.record, null, 2) + "\n");
        }
    });
}

/** Final replies (not streamed chunks) per id, and how many ids got more than one. */
export function countFinals(ids: readonly string[], finals: (id: string) => number): {received: number; duplicates: number} {
    let received = 0;
    let duplicates = 0;
    for (const id of ids) {
        const n = finals(id);
        if (n > 0) received++;
        if (n > 1) duplicates += n - 1;
    }
    return {received, duplicates};
}
