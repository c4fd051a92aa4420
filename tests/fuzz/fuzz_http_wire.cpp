// libFuzzer target: what transport-http reads off the wire before a handler runs and what it writes
// back from client text (plugins/transport-http/request_parsing.cpp): request targets, percent
// decoding, multipart bodies, the JSON error body and the access log's escaping. Input: byte 0 is
// the boundary's length, then the boundary, then the rest is both the target and the body.
// Contract checked (a violation aborts):
//  - parse_multipart fails only with RequestError 400 or 413, and what it accepts is within limits;
//  - an error body built from any client text is valid JSON that parses back (json_text never throws);
//  - escaped() output is printable ASCII only (no newline, NUL, or UTF-8 such as U+202E) and
//    decoding a percent-escape never grows the text.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "request_parsing.hpp"
#include "responses.hpp"

namespace {

using namespace sightline::http;

[[noreturn]] void violated(const std::string& what) {
    std::fprintf(stderr, "fuzz_http_wire: contract violated: %s\n", what.c_str());
    std::abort();
}

void check_printable(const std::string& s) {
    for (unsigned char c : s)
        if (c < 32 || c >= 127) violated("escaped() let byte " + std::to_string(c) + " through");
}

void check_error_body(const std::string& message) {
    const std::string text = json_text(error_json("invalid_argument", message, message));
    auto parsed = nlohmann::json::parse(text, nullptr, false);
    if (parsed.is_discarded() || !parsed["error"].is_object()) violated("an error body that is not JSON: " + text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const std::size_t blen = bytes.empty() ? 0 : static_cast<unsigned char>(bytes[0]) % 80;
    const std::string_view boundary = bytes.substr(std::min<std::size_t>(1, bytes.size()), blen);
    const std::string_view rest = bytes.substr(std::min(bytes.size(), 1 + blen));

    const Target t = parse_target(rest);
    if (t.path.size() > rest.size()) violated("a decoded path longer than the target");
    check_error_body("no such endpoint: " + t.path);
    check_error_body(std::string(rest));
    for (const auto& [k, v] : t.query) {
        check_error_body(k + "=" + v);
        check_printable(escaped(k));
    }
    const std::string shown = escaped(t.path, 64);
    check_printable(shown);
    check_printable(escaped(rest));
    if (percent_decode(rest, true).size() > rest.size()) violated("percent_decode grew the text");

    try {
        auto parts = parse_multipart(rest, boundary, 4, [](const std::string& name) -> std::uint64_t {
            return name == "image" ? 256 : 32;
        });
        if (parts.size() > 4) violated("more parts than allowed");
        for (const auto& p : parts) {
            if (p.content.size() > (p.name == "image" ? 256u : 32u)) violated("a part over its cap");
            check_error_body(p.name + p.filename + p.content_type + p.content);
        }
    } catch (const RequestError& e) {
        if (e.status() != 400 && e.status() != 413) violated("unexpected status " + std::to_string(e.status()));
        check_error_body(e.what());
    }
    return 0;
}
