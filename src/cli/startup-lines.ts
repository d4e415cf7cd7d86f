/**
 * The daemon's first log lines, in words: which device this is, where requests go and where the
 * status is published. Someone who just started it should not have to read the README to find the
 * topic to publish a prompt to. Pure: the configuration in, the lines out.
 */
import type {QwenEdgeConfig} from "../config.js";
import {topicLayout} from "../mqtt/topics.js";

export interface StartupLine {
    message: string;
    fields: Record<string, unknown>;
}

export function startupLines(config: QwenEdgeConfig): StartupLine[] {
    const layout = topicLayout(config.mqtt.baseTopic, config.device.id, config.mqtt.fleetGroup);
    const fleet = layout.fleetRequest === null ? null : `${layout.base}/fleet/request`;
    const routes = config.routes.length;
    const requests = [`device "${layout.device}": send requests to ${layout.request}`,
        fleet !== null ? `, or to ${fleet} for any device of the fleet` : "",
        routes === 1 ? "; 1 prompt route listens on its own topic" : routes > 1 ? `; ${routes} prompt routes listen on their own topics` : ""].join("");
    const interval = Math.max(1, config.telemetry.intervalSeconds);
    return [
        {message: requests, fields: {device: layout.device, request: layout.request, fleet, cancel: layout.cancel, response: layout.response}},
        {message: `status is published (retained) on ${layout.status}, health every ${interval} s on ${layout.health}`,
            fields: {status: layout.status, info: layout.info, health: layout.health}}
    ];
}
