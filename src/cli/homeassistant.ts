/**
 * `qwen-edge homeassistant remove [--device ID]`: deletes the device from Home Assistant by
 * publishing the empty retained payload on its discovery topic (Home Assistant's documented way to
 * remove a discovered device). Set `telemetry.homeAssistant: false` first, or the running daemon
 * announces the device again when Home Assistant next restarts.
 */
import mqtt from "mqtt";
import {loadConfig} from "../config.js";
import {ConfigError} from "../errors.js";
import {topicLayout} from "../mqtt/topics.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";
import {cliClientOptions} from "./status.js";

export async function homeAssistantCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["device"]});
    if (positional[0] !== "remove" || positional.length !== 1)
        throw new ConfigError("homeassistant: use `qwen-edge homeassistant remove [--device ID]`");
    const config = loadConfig({args: configArgs});
    const device = typeof flags.device === "string" ? flags.device : config.device.id;
    // The same topic layout as the daemon's: the device id and the prefix are validated alike.
    const topic = topicLayout(config.mqtt.baseTopic, device, "").discovery(config.telemetry.discoveryPrefix);
    const client = await mqtt.connectAsync(config.mqtt.url, cliClientOptions(config, "homeassistant"));
    try {
        await client.publishAsync(topic, "", {qos: 1, retain: true});
    } finally {
        await client.endAsync();
    }
    process.stdout.write(`removed: published an empty retained message on ${topic}\n`);
    return EXIT.ok;
}
