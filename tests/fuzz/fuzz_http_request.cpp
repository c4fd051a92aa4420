// libFuzzer target: the HTTP transport's request parsing (plugins/transport-http/request_parsing.cpp)
// on arbitrary requests (the input format is in http_request_input.hpp). Besides memory errors
// (ASan), it checks the parsing contract:
//  - the only failure is a RequestError with status 400, 413 or 415 (anything else escapes and is
//    reported as a crash);
//  - an accepted recognition request has a non-empty image within the byte limit, a content type,
//    and client fields within their limits that are valid UTF-8 (a sink can write them as JSON);
//  - accepted gallery metadata is a JSON object and normalising it again changes nothing;
//  - the small parsers (media type, list query, bearer token, listen address, ids, UTF-8) agree
//    with their contracts; is_valid_utf8 agrees with nlohmann::json's own UTF-8 check.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "http_request_input.hpp"
#include "request_parsing.hpp"

namespace {

using namespace sightline::http;

[[noreturn]] void violated(const std::string& what) {
    std::fprintf(stderr, "fuzz_http_request: contract violated: %s\n", what.c_str());
    std::abort();
}

void check_status(const RequestError& e) {
    if (e.status() != 400 && e.status() != 413 && e.status() != 415)
        violated("unexpected status " + std::to_string(e.status()) + ": " + e.what());
    if (e.code().empty() || std::string(e.what()).empty()) violated("an error without code or message");
}

bool json_accepts(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return true;
    } catch (const nlohmann::json::exception&) {
        return false;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const Upload up = sightline::fuzz::decode_input(bytes);
    ParseLimits limits;
    limits.max_image_bytes = 2048;
    limits.max_metadata_bytes = 1024;
    limits.max_metadata_depth = 8;
    limits.max_fields = 4;
    limits.max_field_bytes = 64;

    try {
        sightline::Request r = parse_recognize(up, limits);
        if (r.image.empty() || r.image.size() > limits.max_image_bytes) violated("image size out of bounds");
        if (r.content_type.empty()) violated("no content type");
        if (r.client_fields.size() > limits.max_fields) violated("too many client fields");
        nlohmann::json fields = nlohmann::json::object();
        for (const auto& [k, v] : r.client_fields) {
            if (v.size() > limits.max_field_bytes || k.empty() || k.size() > 64) violated("client field out of bounds");
            fields[k] = v;
        }
        (void)fields.dump();  // throws on invalid UTF-8: reported as a crash
    } catch (const RequestError& e) {
        check_status(e);
    }

    try {
        GalleryUpload g = parse_gallery_upload(up, limits);
        if (g.image.empty() || g.image.size() > limits.max_image_bytes) violated("gallery image size out of bounds");
        auto meta = nlohmann::json::parse(g.metadata_json);
        if (!meta.is_object()) violated("metadata is not an object");
        if (normalise_metadata(g.metadata_json, limits) != g.metadata_json) violated("metadata normalisation is not stable");
    } catch (const RequestError& e) {
        check_status(e);
    }

    // The small parsers, on the same strings.
    if (auto mt = parse_media_type(up.content_type)) {
        if (mt->type.find('/') == std::string::npos) violated("media type without '/'");
        for (char c : mt->type)
            if (c >= 'A' && c <= 'Z') violated("media type not lower case");
    }
    try {
        ListQuery q = parse_list_query(up.query, 50);
        if (q.limit < 1 || q.limit > 50) violated("list limit out of bounds");
        if (!q.after.empty() && invalid_item_id_reason(q.after)) violated("invalid after accepted");
    } catch (const RequestError& e) {
        check_status(e);
    }
    if (auto token = bearer_token(up.content_type)) {
        if (token->empty()) violated("empty bearer token");
        if (!constant_time_equal(*token, std::string(*token))) violated("a token differs from itself");
    }
    for (const auto& [k, v] : up.query) {
        if (constant_time_equal(k, v) != (k == v)) violated("constant_time_equal disagrees with ==");
        if (is_valid_utf8(v) != json_accepts(v)) violated("is_valid_utf8 disagrees with nlohmann::json");
        if (!invalid_item_id_reason(k) && (k.empty() || k.size() > 128 || k[0] == '.')) violated("bad item id accepted");
        if (!invalid_request_id_reason(k) && (k.empty() || k.size() > 128)) violated("bad request id accepted");
    }
    try {
        ListenAddress a = parse_listen(up.content_type);
        if (a.port < 0 || a.port > 65535 || a.host.empty()) violated("listen address out of bounds");
    } catch (const std::invalid_argument&) {
    }
    if (!sniff_image_type(up.body).empty() && !is_accepted_image_type(sniff_image_type(up.body)))
        violated("a sniffed type is not accepted");
    return 0;
}
