/**
 * deploy/config.example.yaml is what `qwen-edge config --example` prints, byte for byte, and it
 * works as a configuration file twice over: as shipped (all comments: the defaults) and with every
 * key uncommented (the same defaults, written out).
 */
import assert from "node:assert/strict";
import {mkdtemp, readFile, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {renderExampleConfig} from "../../src/cli/config-example.js";
import {loadConfig} from "../../src/config.js";
import {configSchema} from "../../src/config-schema.js";

const EXAMPLE = fileURLToPath(new URL("../../../deploy/config.example.yaml", import.meta.url));

describe("deploy/config.example.yaml", () => {
    let dir: string;
    let example: string;

    before(async () => {
        dir = await mkdtemp(join(tmpdir(), "qe-example-"));
        example = await readFile(EXAMPLE, "utf8");
    });

    after(async () => {
        await rm(dir, {recursive: true, force: true});
    });

    it("is exactly the output of `qwen-edge config --example` (regenerate: node dist/src/main.js config --example > deploy/config.example.yaml)", () => {
        assert.equal(example, renderExampleConfig());
    });

    it("loads as a configuration file and changes nothing", async () => {
        const file = join(dir, "as-shipped.yaml");
        await writeFile(file, example);
        assert.deepEqual(loadConfig({args: ["--config", file], env: {}}), loadConfig({env: {}}));
    });

    it("with every key uncommented, still loads and gives the same defaults", async () => {
        const keys = new Set<string>();
        for (const [name, node] of Object.entries(configSchema as Record<string, object>)) {
            if ("doc" in node) keys.add(name);
            else for (const key of Object.keys(node)) keys.add(key);
        }
        // the top-level lists (routes, actions) are shown as a commented example entry, not a value line
        for (const list of ["routes", "actions"]) keys.delete(list);
        const uncommented = new Set<string>();
        const text = example.split("\n").map((line) => {
            const m = /^( {2})?# (\w+): (.+)$/.exec(line);
            if (!m?.[2] || !keys.has(m[2])) return line;
            uncommented.add(m[2]);
            return `${m[1] ?? ""}${m[2]}: ${m[3]}`;
        }).join("\n");
        assert.deepEqual([...keys].filter((k) => !uncommented.has(k)), [], "a value line for every key");
        const file = join(dir, "uncommented.yaml");
        await writeFile(file, text);
        assert.deepEqual(loadConfig({args: ["--config", file], env: {}}), loadConfig({env: {}}));
    });

    it("an empty file and a section with nothing under it load too", async () => {
        const empty = join(dir, "empty.yaml");
        await writeFile(empty, "");
        assert.deepEqual(loadConfig({args: ["--config", empty], env: {}}), loadConfig({env: {}}));
        const bare = join(dir, "bare.yaml");
        await writeFile(bare, "mqtt:\n  # url: \"mqtt://broker:1883\"\ninference:\n  threads: 1\n");
        assert.equal(loadConfig({args: ["--config", bare], env: {}}).inference.threads, 1);
    });
});
