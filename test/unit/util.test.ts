import {describe, it, mock} from "node:test";
import assert from "node:assert/strict";
import {mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {brokerAuth} from "../../src/mqtt/credentials.js";
import {syncDir} from "../../src/util/fs.js";
import {didYouMean, editDistance, LONE_SURROGATE} from "../../src/util/text.js";
import {withTimeout} from "../../src/util/timeout.js";
import {redactUrl} from "../../src/util/url.js";

void describe("withTimeout", () => {
    void it("gives the work's value when it settles first, and leaves no timer behind", async () => {
        mock.timers.enable({apis: ["setTimeout"]});
        try {
            let timedOut = false;
            assert.equal(await withTimeout(Promise.resolve("done"), 1000, () => { timedOut = true; return "late"; }), "done");
            mock.timers.tick(2000);
            assert.equal(timedOut, false, "the timer was cleared");
        } finally {
            mock.timers.reset();
        }
    });

    void it("gives onTimeout's value when the time passes first", async () => {
        mock.timers.enable({apis: ["setTimeout"]});
        try {
            const raced = withTimeout(new Promise<string>(() => undefined), 1000, () => "timed out");
            mock.timers.tick(999);
            let settled = false;
            void raced.then(() => { settled = true; });
            await Promise.resolve();
            assert.equal(settled, false, "not before the time");
            mock.timers.tick(1);
            assert.equal(await raced, "timed out");
        } finally {
            mock.timers.reset();
        }
    });

    void it("rejects with what onTimeout throws, and with the work's own rejection", async () => {
        await assert.rejects(withTimeout(new Promise(() => undefined), 1, () => { throw new Error("no PUBACK within 1 ms"); }), /no PUBACK within 1 ms/);
        await assert.rejects(withTimeout(Promise.reject(new Error("broken")), 1000, () => "late"), /broken/);
    });
});

void describe("redactUrl", () => {
    const table: Array<[string, string, string]> = [
        ["user and password", "mqtt://user:secret@broker:1883", "mqtt://broker:1883"],
        ["a trailing slash", "mqtt://broker:1883/", "mqtt://broker:1883"],
        ["credential-like query values", "https://cdn.example/f.gguf?X-Amz-Signature=abc&token=t0k&part=2",
            "https://cdn.example/f.gguf?X-Amz-Signature=REDACTED&token=REDACTED&part=2"],
        ["an unparseable URL, which may hold a secret", "mqtt://user:pa ss@", "(invalid url)"]
    ];
    for (const [name, url, expected] of table) void it(name, () => assert.equal(redactUrl(url), expected));
});

void describe("didYouMean", () => {
    const known = ["maxTokens", "prompt", "topK"];
    void it("names the key spelt in another case or with _ and -", () => {
        assert.equal(didYouMean("max_tokens", known), " (did you mean \"maxTokens\"?)");
        assert.equal(didYouMean("MAX-TOKENS", known), " (did you mean \"maxTokens\"?)");
    });
    void it("names a near misspelling only when edits are allowed, and only for names over 3 letters", () => {
        assert.equal(didYouMean("promt", known), "");
        assert.equal(didYouMean("promt", known, 2), " (did you mean \"prompt\"?)");
        assert.equal(didYouMean("topX", known, 2), " (did you mean \"topK\"?)");
        assert.equal(didYouMean("ix", ["id"], 2), "", "a name of 3 letters or fewer is near too many others");
        assert.equal(didYouMean("colour", known, 2), "");
    });
    void it("counts edits", () => {
        assert.equal(editDistance("kitten", "sitting"), 3);
        assert.equal(editDistance("", "abc"), 3);
    });
});

void describe("LONE_SURROGATE", () => {
    void it("finds an unpaired surrogate and passes a pair", () => {
        assert.equal(LONE_SURROGATE.test("a\ud800b"), true);
        assert.equal(LONE_SURROGATE.test("a\udc00"), true);
        assert.equal(LONE_SURROGATE.test("emoji \ud83d\ude00"), false);
    });
});

void describe("syncDir", () => {
    void it("syncs a directory, and throws for one that is not there", () => {
        const dir = mkdtempSync(join(tmpdir(), "qe-util-"));
        try {
            syncDir(dir);
            assert.throws(() => syncDir(join(dir, "missing")), /ENOENT/);
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
});

void describe("brokerAuth", () => {
    void it("passes only what is set", () => {
        assert.deepEqual(brokerAuth("", {}), {});
        const ca = Buffer.from("ca");
        assert.deepEqual(brokerAuth("dev", {password: Buffer.from("pw"), ca}), {username: "dev", password: Buffer.from("pw"), ca});
    });
});
