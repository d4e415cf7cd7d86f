/**
 * A URL fit for logs and messages: no user or password, the values of query parameters that look
 * like credentials (token, sig, key, ...) replaced, and "(invalid url)" for one that does not parse
 * (it may still hold a secret). A trailing "/" is dropped: mqtt://host:1883/ reads mqtt://host:1883.
 */
export function redactUrl(url: string): string {
    try {
        const u = new URL(url);
        u.username = "";
        u.password = "";
        for (const key of [...u.searchParams.keys()])
            if (/token|sig|key|secret|auth|pass|credential/i.test(key)) u.searchParams.set(key, "REDACTED");
        return u.href.replace(/\/$/, "");
    } catch {
        return "(invalid url)";
    }
}
