// The "scripted --text" and "tool-call" test models, in the real node-llama-cpp, the way tests of client tools
// and device actions will use them: the call must come back parsed, with exactly the arguments it was made with,
// from LlamaChat (which returns calls) and LlamaChatSession (which runs handlers); a call to a tool the request
// did not define must not break the parse; a scripted answer must be exactly its text.
import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {execFile} from "node:child_process";
import {mkdtemp, rm} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {fileURLToPath} from "node:url";
import {promisify} from "node:util";
import {
    defineChatSessionFunction, getLlama, LlamaChat, LlamaChatSession, LlamaLogLevel, QwenChatWrapper,
    type ChatHistoryItem, type ChatModelFunctions, type Llama, type LlamaContextSequence, type LlamaModel
} from "node-llama-cpp";
import {QWEN35_CALL} from "../../src/testing/scripted-chain.js";
import {buildTinyQwen35, writeTinyQwen35, type TinyQwen35Options} from "../../src/testing/tiny-qwen35.js";

const exec = promisify(execFile);
const MAKE_MODEL = fileURLToPath(new URL("../../src/testing/make-model.js", import.meta.url));
const SYSTEM = "You are a home assistant on an edge device.";
const HISTORY: ChatHistoryItem[] = [{type: "system", text: SYSTEM}, {type: "user", text: "Turn off the kitchen light."}];
const ARGS = {room: "kitchen", state: "off"};
const FUNCTIONS = {
    set_light: {description: "Switch a light", params: {type: "object", properties: {room: {type: "string"}, state: {enum: ["on", "off"]}}}}
} as const satisfies ChatModelFunctions;
const discourage = (): QwenChatWrapper => new QwenChatWrapper({variation: "3.5", thoughts: "discourage"});

void describe("scripted-text and tool-call test models", () => {
    let dir = "";
    let llama: Llama | undefined;
    let toolModel = "";
    let unlockModel = "";

    before(async () => {
        dir = await mkdtemp(join(tmpdir(), "qe-tool-model-"));
        llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error});
        // through the CLI, as a test or a user would make one
        toolModel = join(dir, "set-light.gguf");
        const {stdout} = await exec(process.execPath, [MAKE_MODEL, toolModel, "--kind", "tool-call", "--tool", "set_light", "--args", JSON.stringify(ARGS)]);
        assert.match(stdout, /^path .*set-light\.gguf$/m);
        unlockModel = await write("unlock.gguf", {kind: "tool-call", toolCall: {name: "unlock_door", args: {door: "front"}}});
    });

    after(async () => {
        await llama?.dispose();
        await rm(dir, {recursive: true, force: true});
    });

    async function write(name: string, options: TinyQwen35Options): Promise<string> {
        return (await writeTinyQwen35(join(dir, name), options)).path;
    }

    /** One model, one sequence of a small context, one thread. */
    async function withSequence<T>(modelPath: string, fn: (sequence: LlamaContextSequence, model: LlamaModel) => Promise<T>): Promise<T> {
        assert.ok(llama);
        const model = await llama.loadModel({modelPath});
        const context = await model.createContext({contextSize: 2048, threads: 1, batchSize: 128});
        try {
            return await fn(context.getSequence(), model);
        } finally {
            await context.dispose();
            await model.dispose();
        }
    }

    async function answer(modelPath: string, prompt: string): Promise<{text: string; stopReason: string}> {
        return withSequence(modelPath, async (sequence) => {
            const session = new LlamaChatSession({contextSequence: sequence, systemPrompt: SYSTEM, chatWrapper: discourage()});
            const r = await session.promptWithMeta(prompt, {maxTokens: 300});
            return {text: r.responseText, stopReason: r.stopReason};
        });
    }

    void it("writes the call syntax that QwenChatWrapper 3.5 writes and parses", () => {
        const call = new QwenChatWrapper({variation: "3.5"}).settings.functions.call;
        assert.deepEqual([call.prefix, call.paramsPrefix, call.suffix].map((t) => t.toString()),
            [`<tool_call>${QWEN35_CALL.prefix}`, QWEN35_CALL.paramsPrefix, `${QWEN35_CALL.suffix}</tool_call>`]);
    });

    void it("scripted --text answers exactly the text, repeated tokens and line breaks included", {timeout: 120_000}, async () => {
        const texts = [
            "The light in the kitchen is off, and the light in the hall is on.",
            "Température : 21 °C ✓\nHumidité : 40 %",
            '{"a": "x", "b": "y", "c": "z"}'
        ];
        for (const [i, text] of texts.entries()) {
            const path = await write(`text-${i}.gguf`, {kind: "scripted", text});
            assert.deepEqual(await answer(path, "Hi"), {text, stopReason: "eogToken"}, text);
        }
        // the first text really repeats tokens, so the respelling was exercised
        const ids = await withSequence(await write("text-check.gguf", {kind: "scripted"}), async (_s, model) => model.tokenize(texts[0] ?? ""));
        assert.ok(new Set(ids).size < ids.length, "the text has no repeated token");
    });

    void it("scripted --text refuses what it cannot chain, and grows hidden for a long text", {timeout: 60_000}, async () => {
        assert.throws(() => buildTinyQwen35({kind: "scripted", text: "\n"}), /cannot spell "\\n": it is one token/);
        assert.throws(() => buildTinyQwen35({kind: "scripted", text: ""}), /empty/);
        const long = Array.from({length: 30}, (_, i) => `Device ${i} is online.`).join(" ");
        assert.throws(() => buildTinyQwen35({kind: "scripted", text: long, hidden: 64}), /use hidden >= \d+/);
        assert.deepEqual(await answer(await write("long.gguf", {kind: "scripted", text: long}), "Status?"), {text: long, stopReason: "eogToken"});
    });

    void it("make-model --kind tool-call: LlamaChat returns the call, parsed, with exactly the arguments, without running it",
        {timeout: 60_000}, async () => {
            for (const thoughts of ["discourage", "auto"] as const) {
                await withSequence(toolModel, async (sequence) => {
                    const chat = new LlamaChat({contextSequence: sequence, chatWrapper: new QwenChatWrapper({variation: "3.5", thoughts})});
                    const text: string[] = [];
                    const thought: string[] = [];
                    let params = "";
                    const r = await chat.generateResponse(HISTORY, {
                        functions: FUNCTIONS, maxTokens: 200,
                        onResponseChunk: (c) => (c.type === "segment" ? thought : text).push(c.text),
                        onFunctionCallParamsChunk: (c) => { params += c.paramsChunk; }
                    });
                    assert.equal(r.metadata.stopReason, "functionCalls", thoughts);
                    assert.deepEqual(r.functionCalls?.map((c) => ({name: c.functionName, params: c.params})), [{name: "set_light", params: ARGS}], thoughts);
                    // the arguments stream on their own callback (with the grammar's closing blank lines), never as text
                    assert.equal(params, `${JSON.stringify(ARGS)}\n\n\n\n`, thoughts);
                    assert.ok(!text.join("").includes("set_light"), thoughts);
                    // thinking on: the thought is closed before the call; "\n\n" after </think> is answer text
                    assert.deepEqual([thought.join(""), r.response], thoughts === "auto" ? ["I will call set_light.", "\n\n"] : ["", ""]);
                });
            }
        });

    void it("continues with the tool's result, which QwenChatWrapper 3.5 renders as Qwen's <tool_response>", {timeout: 60_000}, async () => {
        await withSequence(toolModel, async (sequence) => {
            const wrapper = discourage();
            const chat = new LlamaChat({contextSequence: sequence, chatWrapper: wrapper});
            const first = await chat.generateResponse(HISTORY, {functions: FUNCTIONS, maxTokens: 200});
            const history = first.lastEvaluation.cleanHistory.slice();
            const last = history.at(-1);
            assert.ok(last?.type === "model");
            history[history.length - 1] = {...last, response: [...last.response, ...(first.functionCalls ?? []).map((c, i) => ({
                type: "functionCall" as const, name: c.functionName, params: c.params, result: {ok: true}, rawCall: c.raw, startsNewChunk: i === 0
            }))]};
            const rendered = wrapper.generateContextState({chatHistory: history, availableFunctions: FUNCTIONS}).contextText.toString();
            assert.ok(rendered.endsWith(`<|im_start|>assistant\n<tool_call>${QWEN35_CALL.prefix}set_light${QWEN35_CALL.paramsPrefix}`
                + `${JSON.stringify(ARGS)}${QWEN35_CALL.suffix}</tool_call><|im_end|>\n`
                + "<|im_start|>user\n<tool_response>\n{\"ok\": true}\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"), rendered);
            // the scripted model only knows one move: given the result, it calls again
            const second = await chat.generateResponse(history, {functions: FUNCTIONS, maxTokens: 200});
            assert.deepEqual([second.metadata.stopReason, second.functionCalls?.map((c) => c.params)], ["functionCalls", [ARGS]]);
        });
    });

    void it("LlamaChatSession runs the handler itself and goes on while the model calls, until maxTokens", {timeout: 60_000}, async () => {
        const calls: unknown[] = [];
        const r = await withSequence(toolModel, async (sequence) => {
            const session = new LlamaChatSession({contextSequence: sequence, systemPrompt: SYSTEM, chatWrapper: discourage()});
            return session.promptWithMeta("Turn off the kitchen light.", {maxTokens: 100, functions: {
                set_light: defineChatSessionFunction({...FUNCTIONS.set_light, handler: (params) => { calls.push(params); return "done"; }})
            }});
        });
        assert.equal(r.stopReason, "maxTokens");
        assert.ok(calls.length >= 2, `${calls.length} calls`);
        for (const c of calls) assert.deepEqual(c, ARGS);
        assert.ok(r.response.every((item) => typeof item !== "string" || item.trim() === ""), JSON.stringify(r.response));
    });

    void it("a call to a tool the request did not define never comes out under that name", {timeout: 60_000}, async () => {
        const run = (functions?: ChatModelFunctions): Promise<Awaited<ReturnType<LlamaChat["generateResponse"]>>> =>
            withSequence(unlockModel, async (sequence) => new LlamaChat({contextSequence: sequence, chatWrapper: discourage()})
                .generateResponse(HISTORY, {functions, maxTokens: 100}));
        // Only set_light defined: the name grammar admits nothing else, so the model is pushed into set_light and
        // its arguments into set_light's schema. Whatever comes out is a valid set_light call or no call at all.
        const other = await run(FUNCTIONS);
        assert.ok(["functionCalls", "maxTokens"].includes(other.metadata.stopReason), other.metadata.stopReason);
        for (const c of other.functionCalls ?? []) {
            assert.equal(c.functionName, "set_light");
            const params: unknown = c.params;
            assert.ok(typeof params === "object" && params !== null && "room" in params && "state" in params, JSON.stringify(params));
            assert.ok(typeof params.room === "string" && (params.state === "on" || params.state === "off"), JSON.stringify(params));
        }
        // Both defined: the intended call.
        const both = await run({...FUNCTIONS, unlock_door: {description: "Unlock a door", params: {type: "object", properties: {door: {type: "string"}}}}});
        assert.deepEqual(both.functionCalls?.map((c) => [c.functionName, c.params]), [["unlock_door", {door: "front"}]]);
        // No functions: nothing parses it; the call is plain text, its control tokens dropped.
        const none = await run();
        assert.deepEqual([none.metadata.stopReason, none.response],
            ["eogToken", `${QWEN35_CALL.prefix}unlock_door${QWEN35_CALL.paramsPrefix}{"door":"front"}${QWEN35_CALL.suffix}`]);
    });
});
