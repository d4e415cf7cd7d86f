/**
 * Storage faults under the job journal (issue 17): the state directory fills up, turns read-only, or
 * fills in the middle of a record and the daemon is then killed. The daemon runs in a private mount
 * namespace whose state directory is a small tmpfs (test/support/private-mount.ts), filled and
 * remounted from outside as another writer or the kernel would. Every message must be acknowledged,
 * answered (`unavailable` while nothing can be kept), the status must say why, and the device must
 * answer the next request within a second of the fault clearing, by itself; no acknowledged request
 * may be lost across a crash.
 */
import assert from "node:assert/strict";
import {closeSync, openSync, readFileSync, statSync, writeSync} from "node:fs";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {finals} from "../support/fault-kit.js";
import {Harness, type DaemonStart} from "../support/harness.js";
import type {Received, TestClient} from "../support/mqtt-client.js";
import {privateExt4, privateTmpfs, type PrivateMount} from "../support/private-mount.js";
import {countFinals, faultCase, type CaseRow} from "../support/reliability.js";
import {withTimeout} from "../../src/util/timeout.js";

const TMPFS_KIB = 512;
/** larger than a page: a record that must take a new page of the full tmpfs, whatever room the last one has */
const BIG_PROMPT = "Summarize the sensor log: ".padEnd(6000, "ok. ");

describe("faults: the state directory's storage fails", () => {
    let h: Harness;
    let client: TestClient;
    const mounts: PrivateMount[] = [];

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-storage-", subscribe: ["qwen-edge/+/status", "s/#"]});
        client = h.client;
    });
    after(async () => {
        await h?.dispose();
        for (const m of mounts) await m.dispose();
    });

    /** A tmpfs for the state directory, or the reason the case must skip. */
    const mount = async (name: string): Promise<PrivateMount | string> => {
        const m = await privateTmpfs(join(h.dir, name), TMPFS_KIB);
        if (typeof m !== "string") mounts.push(m);
        return m;
    };
    const inside = (m: PrivateMount, device: string, extra: Partial<DaemonStart> = {}): DaemonStart =>
        ({device, stateDir: join(m.path, "state"), prefix: m.prefix, ...extra});
    /** Publishes a request and waits for its PUBACK (5 s, named): the daemon must acknowledge every message. */
    const send = async (device: string, id: string, body: Record<string, unknown>): Promise<number> => {
        const at = Date.now();
        await withTimeout(client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, replyTo: `s/${id}`, ...body})), 5000, () => {
            throw new Error(`no PUBACK within 5000 ms for ${id}`);
        });
        return Date.now() - at;
    };
    const final = (id: string, timeoutMs = 20_000): Promise<Received> =>
        client.waitFor(`final reply of ${id}`, (m) => m.topic === `s/${id}` && m.json?.status !== "streaming", timeoutMs);
    const code = (m: Received): string => String((m.json?.error as {code?: string} | undefined)?.code ?? m.json?.status);
    const statusAfter = (device: string, since: number, state: string, reason?: RegExp, timeoutMs = 10_000): Promise<Received> =>
        client.waitFor(`${device} ${state}${reason ? ` (${String(reason)})` : ""}`, (m) => m.topic === `qwen-edge/${device}/status` && m.at >= since
            && m.json?.state === state && (reason === undefined || reason.test(String(m.json?.reason))), timeoutMs);
    const shown = (m: PrivateMount, text: string): string => text.replaceAll(m.path, "<state fs>");
    /** Starts a daemon and waits for it online; a timeout says what the daemon did meanwhile. */
    const startOnline = async (o: DaemonStart, timeoutMs = 60_000): Promise<DaemonProcess> => {
        const since = Date.now();
        const d = await h.spawn(o);
        await statusAfter(o.device, since, "online", undefined, timeoutMs).catch((err: unknown) => {
            const statuses = client.received.filter((m) => m.topic === `qwen-edge/${o.device}/status` && m.at >= since).map((m) => m.text);
            throw new Error(`${(err as Error).message}; statuses: ${statuses.join(" | ") || "none"}; exit: ${String(d.child.exitCode ?? d.child.signalCode)}; `
                + `log tail: ${d.stdout().slice(-2000)}`);
        });
        return d;
    };

    /**
     * While the fault lasts: `n` requests each acknowledged and answered `unavailable`; then the fault is
     * cleared and the next request answered. Returns the figures the storage cases share.
     */
    const refusedThenServed = async (row: CaseRow, device: string, prefix: string, n: number, clear: () => void) => {
        let slowestAck = 0;
        const codes: string[] = [];
        for (let i = 0; i < n; i++) {
            slowestAck = Math.max(slowestAck, await send(device, `${prefix}-${i}`, {prompt: BIG_PROMPT, maxTokens: 8}));
            codes.push(code(await final(`${prefix}-${i}`)));
        }
        const refusal = await final(`${prefix}-0`);
        clear();
        const clearedAt = Date.now();
        await send(device, `${prefix}-after`, {prompt: "hi", maxTokens: 8});
        const after = await final(`${prefix}-after`);
        const online = await statusAfter(device, clearedAt, "online");
        row.figure("acknowledged during the fault", `${n} of ${n}`);
        row.figure("slowest PUBACK during the fault (ms)", slowestAck);
        row.figure("fault cleared → next request answered (ms)", after.at - clearedAt);
        row.figure("fault cleared → status online (ms)", online.at - clearedAt);
        return {codes, refusal, after, clearedAt, online};
    };

    faultCase("S01", async (row) => {
        const m = await mount("full");
        if (typeof m === "string") return row.skip(m);
        const device = "fault-full";
        const d = await startOnline(inside(m, device));
        await send(device, "full-before", {prompt: "hi", maxTokens: 8});
        assert.equal(code(await final("full-before")), "ok");
        const filled = m.fill();
        const faultAt = Date.now();
        row.inject(`the daemon's state directory on a ${TMPFS_KIB} KiB tmpfs; another writer fills it (${Math.round(filled / 1024)} KiB, `
            + `${m.freeBytes()} bytes left); 3 requests of ${BIG_PROMPT.length} bytes; then the filler is deleted`);
        const degraded = statusAfter(device, faultAt, "degraded", /job journal: the state directory is full/);
        const r = await refusedThenServed(row, device, "full", 3, () => m.unfill());
        const status = await degraded;
        const ids = ["full-before", "full-0", "full-1", "full-2", "full-after"];
        const counted = countFinals(ids, (id) => finals(client, `s/${id}`).length);
        const message = String((r.refusal.json?.error as {message?: string}).message);
        row.replies(ids.length, counted.received, counted.duplicates);
        row.recovered(r.after.at - r.clearedAt);
        row.figure("replies during the fault", r.codes.join(", "));
        row.figure("status during the fault", shown(m, `${String(status.json?.state)}: ${String(status.json?.reason)}`));
        row.observe(`every request was acknowledged and answered ${[...new Set(r.codes)].join(", ")} ("${shown(m, message)}"), the status `
            + `degraded with the reason; once the space came back the next request was answered ${code(r.after)} ${r.after.at - r.clearedAt} ms `
            + `later and the status was online again ${r.online.at - r.clearedAt} ms after, with no restart`);

        assert.deepEqual(r.codes, ["unavailable", "unavailable", "unavailable"]);
        assert.match(message, /state directory is full \(ENOSPC/);
        assert.equal(code(r.after), "ok");
        assert.ok(r.after.at - r.clearedAt < 1000, `answered ${r.after.at - r.clearedAt} ms after the space came back`);
        assert.deepEqual(counted, {received: ids.length, duplicates: 0});
        assert.equal(d.logs.filter((l) => l.message === "intake failed; the message is acknowledged without an answer").length, 0);
        assert.equal((await d.term()).code, 0);
    });

    faultCase("S02", async (row) => {
        const m = await mount("readonly");
        if (typeof m === "string") return row.skip(m);
        const device = "fault-ro";
        // Linux refuses to remount a filesystem read-only while a file on it is open for writing (the journal is).
        const first = await startOnline(inside(m, device));
        const busy = m.tryRemount("ro");
        assert.equal((await first.term()).code, 0);
        m.remount("ro");
        row.inject("the state directory on a tmpfs remounted read-only (as the kernel does to a failing card) before the daemon starts; "
            + "3 requests; then remounted read-write. Again from the start, with write access back before any request");
        const since = Date.now();
        const d = await h.spawn(inside(m, device));
        const atStart = await statusAfter(device, since, "degraded", /job journal: the state directory cannot be written \(EROFS/, 30_000);
        const r = await refusedThenServed(row, device, "ro", 3, () => m.remount("rw"));
        assert.equal((await d.term()).code, 0);

        // Write access back before the first request: that request's journal write is the first to succeed.
        m.remount("ro");
        const since2 = Date.now();
        const d2 = await h.spawn(inside(m, device));
        await statusAfter(device, since2, "degraded", /EROFS/, 30_000);
        m.remount("rw");
        const clearedAt = Date.now();
        await send(device, "ro2-after", {prompt: "hi", maxTokens: 8});
        const after2 = await final("ro2-after");
        const online2 = await statusAfter(device, clearedAt, "online").catch(() => null);

        const ids = ["ro-0", "ro-1", "ro-2", "ro-after", "ro2-after"];
        const counted = countFinals(ids, (id) => finals(client, `s/${id}`).length);
        row.replies(ids.length, counted.received, counted.duplicates);
        row.recovered(r.after.at - r.clearedAt);
        row.figure("remount read-only while the daemon runs", busy === null ? "done" : `refused: ${busy.split("\n")[0]!.replace(/^mount: [^:]+: /, "")}`);
        row.figure("status at start", shown(m, `${String(atStart.json?.state)}: ${String(atStart.json?.reason)}`));
        row.figure("replies during the fault", r.codes.join(", "));
        row.figure("write access back before any request → next answered (ms)", after2.at - clearedAt);
        row.figure("… → status online (ms)", online2 === null ? "never (within 10 s)" : online2.at - clearedAt);
        row.observe(`started degraded ("${shown(m, String(atStart.json?.reason))}"); every request acknowledged and answered `
            + `${[...new Set(r.codes)].join(", ")}; write access back → the next request answered ${code(r.after)} ${r.after.at - r.clearedAt} ms later, `
            + `online again with no restart. With write access back before any request: answered ${code(after2)}, status `
            + `${online2 === null ? "still degraded" : `online ${online2.at - clearedAt} ms later`}. A running daemon's state directory cannot be `
            + `remounted read-only at all (${busy === null ? "it could" : "the kernel refuses while the journal is open for writing"})`);

        assert.deepEqual(r.codes, ["unavailable", "unavailable", "unavailable"]);
        assert.equal(code(r.after), "ok");
        assert.ok(r.after.at - r.clearedAt < 1000, `answered ${r.after.at - r.clearedAt} ms after write access came back`);
        assert.equal(code(after2), "ok");
        assert.ok(online2 !== null, "the status is online again once a journal write succeeds");
        assert.deepEqual(counted, {received: ids.length, duplicates: 0});
        assert.equal((await d2.term()).code, 0);
    });

    faultCase("S05", async (row) => {
        const m = await privateExt4(join(h.dir, "ext4"), h.dir, 16);
        if (typeof m === "string") return row.skip(m);
        mounts.push(m);
        const device = "fault-ext4";
        const d = await startOnline(inside(m, device));
        await send(device, "ext4-before", {prompt: "hi", maxTokens: 8});
        assert.equal(code(await final("ext4-before")), "ok");
        m.forceReadOnly();
        const faultAt = Date.now();
        row.inject("the state directory on an ext4 filesystem (a loop device, errors=remount-ro) that reports an error while the daemon "
            + "runs: the kernel makes it read-only under the open journal; 3 requests; then the filesystem is detached, checked (e2fsck) "
            + "and mounted again in its place");
        const degraded = statusAfter(device, faultAt, "degraded", /job journal: the state directory cannot be written \(EROFS/);
        const r = await refusedThenServed(row, device, "ext4", 3, () => m.repair());
        const status = await degraded;
        const ids = ["ext4-before", "ext4-0", "ext4-1", "ext4-2", "ext4-after"];
        const counted = countFinals(ids, (id) => finals(client, `s/${id}`).length);
        row.replies(ids.length, counted.received, counted.duplicates);
        row.recovered(r.after.at - r.clearedAt);
        row.figure("replies during the fault", r.codes.join(", "));
        row.figure("status during the fault", shown(m, `${String(status.json?.state)}: ${String(status.json?.reason)}`));
        row.observe(`every request acknowledged and answered ${[...new Set(r.codes)].join(", ")}, the status degraded with the reason; once `
            + `the checked filesystem was mounted again the journal was opened anew there and the next request answered ${code(r.after)} `
            + `${r.after.at - r.clearedAt} ms later, online again, with no restart`);

        assert.deepEqual(r.codes, ["unavailable", "unavailable", "unavailable"]);
        assert.equal(code(r.after), "ok");
        assert.ok(r.after.at - r.clearedAt < 1000, `answered ${r.after.at - r.clearedAt} ms after the filesystem came back`);
        assert.deepEqual(counted, {received: ids.length, duplicates: 0});
        assert.equal((await d.term()).code, 0);
    });

    faultCase("S03", async (row) => {
        const m = await mount("torn");
        if (typeof m === "string") return row.skip(m);
        const device = "fault-torn";
        const journal = m.outside("state/jobs.journal");
        const start = (): Promise<DaemonProcess> =>
            startOnline(inside(m, device, {model: "endless", args: ["--inference-context-size", "2048", "--telemetry-interval-seconds", "1"]}));
        const accepted = (d: DaemonProcess, id: string): Promise<unknown> =>
            d.waitForLog(`${id} accepted`, (l) => l.message === "request accepted" && l.id === id, 10_000);
        const d = await start();
        await send(device, "torn-run", {prompt: "go", maxTokens: 1500, stream: true});
        await client.waitFor("first chunk of torn-run", (msg) => msg.topic === "s/torn-run" && msg.json?.status === "streaming");
        const acked = ["torn-run"];
        // Small requests until the journal's last page has room left: the big record will fill it, then meet ENOSPC.
        for (let i = 0; i < 3 && (acked.length === 1 || statSync(journal).size % 4096 === 0); i++) {
            acked.push(`torn-a${i}`);
            await send(device, `torn-a${i}`, {prompt: "queued", maxTokens: 16});
            await accepted(d, `torn-a${i}`);
        }
        const size = statSync(journal).size;
        const room = 4096 - (size % 4096);
        assert.ok(room < 4096, `the journal (${size} bytes) ends on a page boundary`);
        // A probe on the same tmpfs: with one page left half used, the kernel takes part of a write, then ENOSPC.
        const probe = openSync(m.outside("probe"), "w");
        writeSync(probe, Buffer.alloc(1));
        m.fill();
        const shortWrite = writeSync(probe, Buffer.alloc(8192), 0, 8192, 1);
        closeSync(probe);
        row.inject(`a running daemon's state tmpfs filled while its journal's last page has ${room} bytes free; a ${BIG_PROMPT.length}-byte `
            + "request (its record does not fit: the kernel writes part of it, then ENOSPC); the space freed; another request accepted; "
            + "SIGKILL with 3 or more accepted requests pending; restart");
        await send(device, "torn-big", {prompt: BIG_PROMPT, maxTokens: 8});
        acked.push("torn-big");
        const big = await final("torn-big");
        const sizeAfter = statSync(journal).size;
        const endsWell = readFileSync(journal).at(-1) === 0x0a;
        m.unfill();
        await send(device, "torn-next", {prompt: "after the space came back", maxTokens: 16});
        acked.push("torn-next");
        await accepted(d, "torn-next");
        await d.kill();
        const lines = readFileSync(journal, "utf8").split("\n").filter((l) => l !== "");
        const unreadable = lines.filter((l) => {
            try {
                JSON.parse(l);
                return false;
            } catch {
                return true;
            }
        }).length;

        const restartedAt = Date.now();
        const d2 = await start();
        for (const id of acked) await final(id, 30_000);
        const recoverMs = Date.now() - restartedAt;
        // a request queued after the replayed ones: its answer means theirs were all published, so duplicates can be counted
        await send(device, "torn-barrier", {prompt: "barrier", maxTokens: 4});
        await final("torn-barrier");
        const counted = countFinals(acked, (id) => finals(client, `s/${id}`).length);
        const open = d2.logs.find((l) => l.message === "job store open") ?? {};
        const lost = acked.filter((id) => finals(client, `s/${id}`).length === 0);

        row.replies(acked.length, counted.received, counted.duplicates);
        row.recovered(recoverMs);
        row.figure("short write on the full tmpfs (bytes of 8192)", shortWrite);
        row.figure("journal bytes before / after the refused record", `${size} / ${sizeAfter}`);
        row.figure("refused request answered", code(big));
        row.figure("journal lines at the kill / unreadable", `${lines.length} / ${unreadable}`);
        row.figure("damaged records at restart", Number(open.damagedRecords));
        row.figure("pending at restart", Number(open.pending));
        row.figure("acknowledged requests lost", lost.length);
        row.observe(`the refused record (the kernel took ${shortWrite} bytes of an 8 KiB write on the full tmpfs) was cut back: the journal was `
            + `${size} bytes before and ${sizeAfter} after, ending with a whole line; the request was answered ${code(big)}; the next one `
            + `was journaled whole after it; after SIGKILL every line parsed (${unreadable} unreadable), the restart found ${String(open.pending)} `
            + `pending and ${String(open.damagedRecords)} damaged records, and all ${acked.length} acknowledged requests were answered exactly once (${lost.length} lost)`);

        assert.ok(shortWrite > 0 && shortWrite < 8192, `the full tmpfs took ${shortWrite} bytes of 8192`);
        assert.equal(code(big), "unavailable");
        assert.equal(sizeAfter, size, "the torn record was cut back off the journal");
        assert.ok(endsWell, "the journal ends with a whole line");
        assert.equal(unreadable, 0, "every journal line parses after the kill");
        assert.equal(open.damagedRecords, 0);
        assert.deepEqual(lost, []);
        assert.deepEqual(counted, {received: acked.length, duplicates: 0});
        assert.equal((await d2.term()).code, 0);
    });
});
