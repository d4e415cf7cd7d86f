/**
 * How many journal bytes a request costs (issue 17: text of control bytes was escaped 6x, so 19.5 MB
 * of requests became a 117 MB fsync'd journal). Plain-text requests of three kinds go to the built
 * daemon: ordinary text, control bytes, and 4-byte UTF-8. Their accept records are read back from the
 * journal: the bytes per request byte, what the same record costs with the prompt as a JSON string
 * (the encoding before), and whether the prompt reads back exactly.
 */
import assert from "node:assert/strict";
import {readFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import {Harness} from "../support/harness.js";
import type {TestClient} from "../support/mqtt-client.js";
import {faultCase} from "../support/reliability.js";
import {decodeJob} from "../../src/jobs/codec.js";

const DEVICE = "fault-growth";
const PER_KIND = 3;
const PROMPT_BYTES = 32 * 1024;

/** `bytes` of text made by repeating `unit`, cut at a character boundary. */
function text(unit: string, bytes: number): string {
    let out = "";
    while (Buffer.byteLength(out) + Buffer.byteLength(unit) <= bytes) out += unit;
    return out;
}

const KINDS: ReadonlyArray<{name: string; prompt: (i: number) => string}> = [
    {name: "plain text", prompt: (i) => text(`Reading ${i}: the "kitchen" sensor says 21.5 °C; humidity 40 %.\nSummarize the day.\n`, PROMPT_BYTES)},
    // every C0 control but NUL, tab and newline (those three escape to 2 bytes or are refused elsewhere)
    {name: "control bytes", prompt: (i) => text(String.fromCharCode(...Array.from({length: 29}, (_, k) => 1 + ((k + i) % 8))) + "\u000b\u001f\u007f", PROMPT_BYTES)},
    {name: "4-byte UTF-8", prompt: (i) => text(String.fromCodePoint(...Array.from({length: 16}, (_, k) => 0x1f300 + k + i)), PROMPT_BYTES)}
];

interface AcceptLine {
    key: string;
    request: Record<string, unknown>;
}

describe("faults: journal bytes per request byte", () => {
    let h: Harness;
    let client: TestClient;

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-growth-", subscribe: [`qwen-edge/${DEVICE}/status`, "g/#"]});
        client = h.client;
    });
    after(() => h?.dispose());

    faultCase("S04", async (row) => {
        const stateDir = join(h.dir, "state");
        const d = await h.start({device: DEVICE, stateDir});
        const sent = new Map<string, {kind: string; prompt: string; bytes: number}>();
        for (const kind of KINDS) {
            for (let i = 0; i < PER_KIND; i++) {
                const id = `${kind.name.replace(/\W+/g, "-")}-${i}`;
                const prompt = kind.prompt(i);
                // plain text: the payload is the prompt, so the request's bytes are the prompt's
                const payload = Buffer.from(prompt, "utf8");
                sent.set(id, {kind: kind.name, prompt, bytes: payload.length});
                await client.publish(`qwen-edge/${DEVICE}/request`, payload, {properties: {responseTopic: `g/${id}`, correlationData: Buffer.from(id)}});
            }
        }
        row.inject(`${PER_KIND} plain-text requests of ${PROMPT_BYTES / 1024} KiB each of three kinds: ordinary text (quotes, newlines, a "°"), `
            + "C0 control bytes (U+0001-U+001F, U+007F), and 4-byte UTF-8 (emoji); the journal's accept records read back after the replies");
        await client.waitForCount(`final replies to all ${sent.size} requests`, (m) => m.topic.startsWith("g/") && m.json?.status !== "streaming",
            sent.size, 60_000);
        const accepted = d.logs.filter((l) => l.message === "request accepted").length;
        const lines = (await readFile(join(stateDir, "jobs.journal"), "utf8")).split("\n").filter((l) => l !== "");
        const perKind = new Map<string, {request: number; journal: number; asJson: number; exact: number; readable: number}>();
        for (const line of lines) {
            const record = JSON.parse(line) as AcceptLine & {op: string};
            if (record.op !== "accept") continue;
            const decoded = decodeJob(record.request);
            assert.ok(decoded, `an accept record the daemon cannot read back: ${record.key}`);
            const id = Buffer.from(decoded.request.reply.correlationData ?? []).toString();
            const mine = sent.get(id);
            assert.ok(mine, `an accept record for a request this case did not send: ${id}`);
            const k = perKind.get(mine.kind) ?? {request: 0, journal: 0, asJson: 0, exact: 0, readable: 0};
            k.request += mine.bytes;
            k.journal += Buffer.byteLength(line) + 1;
            // the same record with the prompt as a JSON string: what the journal held before the compact encoding
            k.asJson += Buffer.byteLength(JSON.stringify({...record, request: {...record.request, prompt: decoded.request.prompt}})) + 1;
            if (decoded.request.prompt === mine.prompt) k.exact++;
            if (typeof record.request.prompt === "string") k.readable++;
            perKind.set(mine.kind, k);
        }
        const ratio = (kind: string, of: "journal" | "asJson"): number => {
            const k = perKind.get(kind);
            return k === undefined ? NaN : Math.round((k[of] / k.request) * 100) / 100;
        };
        row.replies(sent.size, accepted, 0);
        for (const kind of KINDS) {
            row.figure(`${kind.name}: journal bytes per request byte`, ratio(kind.name, "journal"));
            row.figure(`${kind.name}: as a JSON string (before)`, ratio(kind.name, "asJson"));
        }
        row.figure("prompts read back exactly", [...perKind.values()].reduce((n, k) => n + k.exact, 0));
        row.figure("prompts readable as text in the journal", [...perKind.values()].reduce((n, k) => n + k.readable, 0));
        row.observe(`journal bytes per request byte: plain text ${ratio("plain text", "journal")} (as a JSON string ${ratio("plain text", "asJson")}), `
            + `control bytes ${ratio("control bytes", "journal")} (${ratio("control bytes", "asJson")}), 4-byte UTF-8 ${ratio("4-byte UTF-8", "journal")} `
            + `(${ratio("4-byte UTF-8", "asJson")}); text whose JSON escaping would take more than 1.5x its UTF-8 bytes is journaled as `
            + "base64; every prompt read back from the journal equals the one sent; ordinary and 4-byte text stay readable in the journal");

        assert.equal(accepted, sent.size, "every request accepted (journaled)");
        for (const kind of KINDS) assert.equal(perKind.get(kind.name)?.exact, PER_KIND, `${kind.name}: prompts read back exactly`);
        assert.ok(ratio("plain text", "journal") <= 1.1, `plain text: ${ratio("plain text", "journal")}`);
        assert.ok(ratio("4-byte UTF-8", "journal") <= 1.1, `4-byte UTF-8: ${ratio("4-byte UTF-8", "journal")}`);
        assert.ok(ratio("control bytes", "journal") <= 1.4, `control bytes: ${ratio("control bytes", "journal")}`);
        assert.equal(perKind.get("plain text")?.readable, PER_KIND, "ordinary prompts stay readable in the journal");
        assert.equal(perKind.get("4-byte UTF-8")?.readable, PER_KIND, "4-byte UTF-8 prompts stay readable in the journal");
        assert.equal((await d.term()).code, 0);
    });
});
