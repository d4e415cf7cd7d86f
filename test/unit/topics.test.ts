import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {ConfigError} from "../../src/errors.js";
import {sanitizeDeviceId, topicLayout, topicMatches, validatePublishTopic, validateTopicFilter} from "../../src/mqtt/topics.js";

void describe("topicLayout", () => {
    void it("lays out every topic of the contract under base and device", () => {
        const layout = topicLayout("qwen-edge", "pi-kitchen", "fleet");
        assert.deepEqual({...layout, discovery: undefined}, {
            base: "qwen-edge",
            device: "pi-kitchen",
            request: "qwen-edge/pi-kitchen/request",
            cancel: "qwen-edge/pi-kitchen/cancel",
            response: "qwen-edge/pi-kitchen/response",
            status: "qwen-edge/pi-kitchen/status",
            info: "qwen-edge/pi-kitchen/info",
            health: "qwen-edge/pi-kitchen/health",
            healthRefresh: "qwen-edge/pi-kitchen/health/refresh",
            fleetHealthRefresh: "qwen-edge/fleet/health/refresh",
            fleetRequest: "$share/fleet/qwen-edge/fleet/request",
            discovery: undefined
        });
        assert.equal(layout.discovery("homeassistant"), "homeassistant/device/pi-kitchen/config");
    });

    void it("turns the fleet queue off for an empty group, and allows a multi-level base", () => {
        const layout = topicLayout("site-1/llm", "gw_2", "");
        assert.equal(layout.fleetRequest, null);
        assert.equal(layout.request, "site-1/llm/gw_2/request");
    });

    const bad: [string, string, string, string, RegExp][] = [
        ["empty base", "", "dev", "g", /mqtt\.baseTopic "" is empty/],
        ["wildcard in base", "a/+/b", "dev", "g", /mqtt\.baseTopic .*wildcard "\+"/],
        ["# in base", "a/#", "dev", "g", /wildcard "#"/],
        ["$ base", "$SYS", "dev", "g", /starts with "\$"/],
        ["empty level in base", "a//b", "dev", "g", /empty level/],
        ["trailing slash in base", "qwen-edge/", "dev", "g", /empty level/],
        ["NUL in base", "a\u0000b", "dev", "g", /NUL/],
        ["empty device", "q", "", "g", /device\.id "" must be 1 to 64 characters of a-z, 0-9, _ and -/],
        ["uppercase device", "q", "Pi", "g", /device\.id "Pi"/],
        ["slash in device", "q", "a/b", "g", /device\.id/],
        ["wildcard in device", "q", "a+", "g", /device\.id/],
        ["device too long", "q", "a".repeat(65), "g", /device\.id/],
        ["slash in group", "q", "dev", "a/b", /mqtt\.fleetGroup "a\/b"/],
        ["wildcard in group", "q", "dev", "g+", /mqtt\.fleetGroup/]
    ];
    for (const [name, base, device, group, message] of bad) {
        void it(`refuses ${name} with a ConfigError naming the key`, () => {
            assert.throws(() => topicLayout(base, device, group), (err: unknown) => err instanceof ConfigError && message.test(err.message));
        });
    }

    void it("refuses a bad discovery prefix", () => {
        const layout = topicLayout("q", "dev", "");
        assert.throws(() => layout.discovery("home/#"), ConfigError);
        assert.throws(() => layout.discovery(""), ConfigError);
    });
});

void describe("sanitizeDeviceId", () => {
    const table: [string, string][] = [
        ["pi-kitchen", "pi-kitchen"],
        ["Pi-Kitchen", "pi-kitchen"],
        ["pi.kitchen.local", "pi-kitchen-local"],
        ["  my host!! ", "my-host"],
        ["a__b", "a__b"],
        ["a..--..b", "a-b"],
        ["café", "cafe"],
        ["ÄÖÜ-box", "aou-box"],
        ["日本", "qwen-edge"],
        ["", "qwen-edge"],
        ["---", "qwen-edge"],
        ["a/+/#\u0000b", "a-b"],
        ["x".repeat(100), "x".repeat(64)],
        [`${"x".repeat(63)}.yz`, "x".repeat(63)]
    ];
    for (const [hostname, expected] of table) {
        void it(`${JSON.stringify(hostname.slice(0, 20))} -> ${JSON.stringify(expected.slice(0, 20))}`, () => {
            const id = sanitizeDeviceId(hostname);
            assert.equal(id, expected);
            assert.doesNotThrow(() => topicLayout("qwen-edge", id, ""), "a sanitized id is always a valid device id");
        });
    }
});

void describe("validatePublishTopic", () => {
    const table: [string, string | null][] = [
        ["qwen-edge/pi/response", null],
        ["clients/émile/réponse", null],
        ["a", null],
        ["", "is empty"],
        ["a/+/b", "contains the wildcard \"+\""],
        ["a/#", "contains the wildcard \"#\""],
        ["a+b", "contains the wildcard \"+\""],
        ["a\u0000b", "contains a NUL character"],
        ["a\nb", "contains a control character"],
        ["a\u0085b", "contains a control character"],
        ["a\uD800b", "contains an unpaired UTF-16 surrogate"],
        ["a\uDC00", "contains an unpaired UTF-16 surrogate"],
        ["a/\uFFFF", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\uFFFE", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\uFDD0", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\uFDEF", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\u{1FFFE}", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\u{10FFFF}", "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse"],
        ["a/\uFDCF\uFDF0\uFFFD\u{1F600}\u{10FFFD}", null],
        ["a\tb", "contains a control character"],
        ["a\u007fb", "contains a control character"],
        ["a\u009fb", "contains a control character"],
        ["a\u00a0b", null],
        ["$SYS/broker", "starts with \"$\" (reserved for the broker)"],
        ["/leading", "has an empty level (a leading, trailing or double \"/\")"],
        ["trailing/", "has an empty level (a leading, trailing or double \"/\")"],
        ["a//b", "has an empty level (a leading, trailing or double \"/\")"],
        ["é".repeat(32768), "is longer than 65535 bytes"],
        ["a".repeat(65535), null]
    ];
    for (const [topic, expected] of table) {
        void it(`${JSON.stringify(topic.slice(0, 24))} -> ${expected ?? "ok"}`, () => {
            assert.equal(validatePublishTopic(topic), expected);
        });
    }
});

void describe("validateTopicFilter", () => {
    const table: [string, string | null][] = [
        ["a/b", null],
        ["a/+/c", null],
        ["+", null],
        ["#", null],
        ["a/#", null],
        ["+/+/#", null],
        ["/a//b", null],
        ["$SYS/#", null],
        ["$share/g/qwen-edge/fleet/request", null],
        ["$share/g/#", null],
        ["", "is empty"],
        ["a/#/b", "uses \"#\" other than as the whole last level"],
        ["a#", "uses \"#\" other than as the whole last level"],
        ["a/b#", "uses \"#\" other than as the whole last level"],
        ["a+/b", "uses \"+\" other than as a whole level"],
        ["a/+b", "uses \"+\" other than as a whole level"],
        ["a\u0000", "contains a NUL character"],
        ["$share/g", "must be $share/{group}/{filter} with a non-empty group and filter"],
        ["$share//a", "must be $share/{group}/{filter} with a non-empty group and filter"],
        ["$share/g/", "must be $share/{group}/{filter} with a non-empty group and filter"],
        ["$share/g+/a", "has a $share group containing \"+\" or \"#\""]
    ];
    for (const [filter, expected] of table) {
        void it(`${JSON.stringify(filter)} -> ${expected ?? "ok"}`, () => {
            assert.equal(validateTopicFilter(filter), expected);
        });
    }
});

void describe("topicMatches", () => {
    const table: [string, string, boolean][] = [
        ["a/b", "a/b", true],
        ["a/b", "a/c", false],
        ["a/b", "a/b/c", false],
        ["a/b/c", "a/b", false],
        ["a/+", "a/b", true],
        ["a/+", "a/b/c", false],
        ["a/+", "a", false],
        ["a/+", "a/", true],
        ["+/+", "/b", true],
        ["+", "a", true],
        ["+", "/a", false],
        ["a/#", "a", true],
        ["a/#", "a/b/c", true],
        ["a/#", "ab", false],
        ["#", "a/b/c", true],
        ["#", "/", true],
        ["qwen-edge/+/request", "qwen-edge/pi/request", true],
        ["qwen-edge/+/request", "qwen-edge/pi/response", false],
        ["A/b", "a/b", false],
        // $-topics are not matched by a leading wildcard, only by a filter naming them.
        ["#", "$SYS/broker/uptime", false],
        ["+/broker/uptime", "$SYS/broker/uptime", false],
        ["$SYS/#", "$SYS/broker/uptime", true],
        ["$SYS/+/uptime", "$SYS/broker/uptime", true],
        // a shared subscription matches what its inner filter matches
        ["$share/fleet/qwen-edge/fleet/request", "qwen-edge/fleet/request", true],
        ["$share/fleet/qwen-edge/+/request", "qwen-edge/pi/request", true],
        ["$share/fleet/#", "qwen-edge/x", true],
        ["$share/fleet/#", "$SYS/x", false],
        ["$share/fleet/qwen-edge/fleet/request", "$share/fleet/qwen-edge/fleet/request", false],
        // invalid filters and wildcard topics match nothing
        ["a/#/b", "a/x/b", false],
        ["a+", "a+", false],
        ["a/+", "a/+", false],
        ["", "", false]
    ];
    for (const [filter, topic, expected] of table) {
        void it(`${JSON.stringify(filter)} ${expected ? "matches" : "does not match"} ${JSON.stringify(topic)}`, () => {
            assert.equal(topicMatches(filter, topic), expected);
        });
    }
});
