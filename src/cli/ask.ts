/**
 * `qwen-edge ask "prompt"`: a client. Sends one request with an MQTT v5 Response Topic and
 * Correlation Data, prints the answer (streamed when asked) and exits.
 */
import {randomBytes} from "node:crypto";
import mqtt from "mqtt";
import {loadConfig} from "../config.js";
import {ConfigError} from "../errors.js";
import {brokerAuth, readBrokerSecrets} from "../mqtt/credentials.js";
import {explainConnectError} from "../mqtt/link.js";
import {withTimeout} from "../util/timeout.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";

export async function askCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {
        values: ["device", "timeout", "max-tokens", "system", "fleet-topic"],
        booleans: ["stream", "json", "thinking", "fleet"]
    });
    const prompt = positional.join(" ");
    if (prompt.trim() === "") throw new ConfigError("ask needs a prompt: qwen-edge ask \"Why is the sky blue?\"");
    const config = loadConfig({args: configArgs});
    const device = typeof flags.device === "string" ? flags.device : config.device.id;
    const timeoutMs = typeof flags.timeout === "string" ? Number(flags.timeout) * 1000 : 120_000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new ConfigError("--timeout is in seconds and must be positive");
    const topic = flags.fleet === true ? `${config.mqtt.baseTopic}/fleet/request` : `${config.mqtt.baseTopic}/${device}/request`;
    const nonce = randomBytes(8).toString("hex");
    const replyTopic = `${config.mqtt.baseTopic}/clients/${nonce}/reply`;
    const request: Record<string, unknown> = {id: `ask-${nonce}`, prompt, stream: flags.stream === true};
    if (typeof flags["max-tokens"] === "string") request.maxTokens = Number(flags["max-tokens"]);
    if (typeof flags.system === "string") request.system = flags.system;
    if (flags.thinking === true) request.thinking = true;

    // The same broker credentials and TLS files as the daemon, read the same way (files only).
    const secrets = readBrokerSecrets(config.mqtt);
    const client = await mqtt.connectAsync(config.mqtt.url, {protocolVersion: 5, clean: true, reconnectPeriod: 0,
        clientId: `qwen-edge-ask-${nonce}`, connectTimeout: 10_000, rejectUnauthorized: true, ...brokerAuth(config.mqtt.username, secrets)
    }).catch((err: Error & {code?: string | number}) => {
        throw new Error(explainConnectError(err, config.mqtt.url, {ca: secrets.ca !== undefined, clientCert: secrets.cert !== undefined}).message);
    });
    try {
        await client.subscribeAsync(replyTopic, {qos: 1});
        const done = new Promise<number>((resolve) => {
            client.on("message", (_topic, payload) => {
                const msg = JSON.parse(payload.toString("utf8")) as {status: string; delta?: string; text?: string; error?: {code: string; message: string}};
                if (flags.json === true && msg.status !== "streaming") process.stdout.write(payload.toString("utf8") + "\n");
                if (msg.status === "streaming") {
                    if (msg.delta !== undefined && flags.json !== true) process.stdout.write(msg.delta);
                    return;
                }
                if (msg.status === "ok") {
                    if (flags.json !== true) process.stdout.write(flags.stream === true ? "\n" : `${msg.text ?? ""}\n`);
                    resolve(EXIT.ok);
                } else {
                    process.stderr.write(`error ${msg.error?.code ?? "?"}: ${msg.error?.message ?? ""}\n`);
                    resolve(EXIT.failure);
                }
            });
        });
        await client.publishAsync(topic, JSON.stringify(request), {qos: 1,
            properties: {responseTopic: replyTopic, correlationData: Buffer.from(nonce)}});
        return await withTimeout(done, timeoutMs, () => {
            process.stderr.write(`no answer from ${topic} within ${timeoutMs / 1000} s (is the daemon running for device "${device}"?)\n`);
            return EXIT.timeout;
        });
    } finally {
        await client.endAsync();
    }
}
