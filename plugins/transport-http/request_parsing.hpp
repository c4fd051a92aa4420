#pragma once
// The HTTP transport's request parsing, with no socket and no HTTP library attached: what a POST or
// PUT carried (Content-Type, raw body or multipart fields, query parameters) becomes a recognition
// Request or a gallery upload, or a RequestError with the HTTP status to answer. Kept apart so that
// tests/fuzz/fuzz_http_request.cpp can feed it arbitrary input.
#include <nlohmann/json.hpp>
#include <sightline/result.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sightline::http {

// One field of a multipart/form-data body.
struct FormPart {
    std::string name;
    std::string filename;      // empty for a plain field
    std::string content_type;  // empty when the part had no Content-Type
    std::string content;
};

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// What a POST or PUT carried.
struct Upload {
    std::string content_type;     // the Content-Type header ("" when absent)
    bool multipart = false;       // the body was read as multipart/form-data into `parts`
    std::string body;             // the raw body otherwise
    std::vector<FormPart> parts;  // in the order they came
    QueryParams query;            // query parameters in order
};

struct ParseLimits {
    std::uint64_t max_image_bytes = 20'000'000;  // limits.max_body_bytes
    std::size_t max_metadata_bytes = 1u << 20;   // the gallery's `metadata` field
    std::size_t max_metadata_depth = 64;         // nesting of JSON arrays and objects in metadata
    std::size_t max_fields = 32;                 // client fields of one recognition request
    std::size_t max_field_bytes = 4096;          // one client field's value
};

// The HTTP status and the error body's code and message ({"error": {"code", "message"}}).
class RequestError : public std::runtime_error {
public:
    RequestError(int status, std::string code, const std::string& message)
        : std::runtime_error(message), status_(status), code_(std::move(code)) {}
    int status() const noexcept { return status_; }
    const std::string& code() const noexcept { return code_; }

private:
    int status_;
    std::string code_;
};

// "Image/JPEG; charset=x" → {"image/jpeg", {{"charset", "x"}}}; nullopt when it is not type/subtype.
struct MediaType {
    std::string type;  // lower case
    std::map<std::string, std::string> params;
};
std::optional<MediaType> parse_media_type(std::string_view header);

// image/jpeg, image/png, image/webp, image/bmp (and their common aliases), application/octet-stream.
bool is_accepted_image_type(const std::string& media_type);
// The human list of accepted types, for messages.
const char* accepted_image_types();
// "image/jpeg" etc. from the first bytes, "" when the bytes are none of the four formats.
std::string sniff_image_type(std::string_view bytes);

// POST /v1/recognize and POST /v1/requests: the image and the client fields (every multipart field
// other than `image`, plus the query parameters). Throws RequestError: 400 (no image, bad field),
// 413 (over a limit), 415 (content type).
Request parse_recognize(const Upload& upload, const ParseLimits& limits);

// PUT /v1/gallery/{id}: a raw image body, or multipart with `image` and an optional `metadata` JSON
// object. metadata_json comes back normalised (re-serialised), "{}" when none was given.
struct GalleryUpload {
    Bytes image;
    std::string content_type;
    std::string metadata_json = "{}";
};
GalleryUpload parse_gallery_upload(const Upload& upload, const ParseLimits& limits);

// Metadata must be a JSON object of bounded size and nesting; returns it re-serialised.
std::string normalise_metadata(std::string_view text, const ParseLimits& limits);

// Gallery item ids: 1–128 characters of [A-Za-z0-9._-], not starting with '.' (the gallery's rule).
std::optional<std::string> invalid_item_id_reason(std::string_view id);
// Request ids (X-Request-Id, GET /v1/requests/{id}): 1–128 characters of [A-Za-z0-9._-].
std::optional<std::string> invalid_request_id_reason(std::string_view id);

// GET /v1/gallery?after=&limit=: limit defaults to min(100, max_page) and is capped at max_page.
struct ListQuery {
    std::string after;
    std::size_t limit = 0;
};
ListQuery parse_list_query(const QueryParams& query, std::size_t max_page);

// The token of an "Authorization: Bearer <token>" header; nullopt for any other form.
std::optional<std::string_view> bearer_token(std::string_view authorization);
// Compares in time that depends on the expected token's length only.
bool constant_time_equal(std::string_view given, std::string_view expected);

// "127.0.0.1:8080", "[::1]:8080", ":8080" (all addresses), "localhost:0" (any free port).
struct ListenAddress {
    std::string host;
    int port = 0;
};
// Throws std::invalid_argument with the reason.
ListenAddress parse_listen(std::string_view text);

bool is_valid_utf8(std::string_view s);

// ---- the wire: what the server reads before a handler runs, and what it writes back

// Client text for a message or a log line: printable ASCII as it is, every other byte (control
// characters, newlines, UTF-8 such as a right-to-left override) as \xNN, a backslash as \\, and at
// most `max` bytes of the input shown ("..." after). Nothing built from it can forge a log line or
// break a JSON body.
std::string escaped(std::string_view s, std::size_t max = 256);

// "%41b+c" -> "Ab+c", or "Ab c" when plus_is_space (query strings); a malformed escape stays as it is.
std::string percent_decode(std::string_view s, bool plus_is_space);

// A request target "/p%61th?a=1&b" -> path "/path" (decoded), query {{"a", "1"}, {"b", ""}} (decoded,
// in order; empty pairs skipped).
struct Target {
    std::string path;
    QueryParams query;
};
Target parse_target(std::string_view target);

// A multipart/form-data body (RFC 7578) into its fields. Throws RequestError: 400 when it is
// malformed or cut short, 413 when it has more than max_parts fields or a field is over
// part_cap(field name) bytes.
using PartCap = std::function<std::uint64_t(const std::string& name)>;
std::vector<FormPart> parse_multipart(std::string_view body, std::string_view boundary, std::size_t max_parts,
                                      const PartCap& part_cap);

// JSON text that never throws: invalid UTF-8 in any string becomes U+FFFD instead of an exception
// escaping a request handler.
std::string json_text(const nlohmann::json& j);

}  // namespace sightline::http
