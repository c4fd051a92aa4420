#include "request_parsing.hpp"

#include <sightline/item_id.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

namespace sightline::http {

namespace {

constexpr std::size_t kMaxFieldNameLength = 64;

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::string_view trim(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

// Client text in a message: printable ASCII only, at most 64 characters.
std::string shown(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += (c >= 32 && c < 127) ? c : '?';
    if (s.size() > 64) out += "...";
    return out;
}

bool is_tchar(unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

[[noreturn]] void bad_request(const std::string& message) { throw RequestError(400, "invalid_argument", message); }
[[noreturn]] void too_large(const std::string& message) { throw RequestError(413, "resource_exhausted", message); }
[[noreturn]] void unsupported_type(const std::string& message) { throw RequestError(415, "unsupported", message); }

// The canonical name of an accepted image type, "" when not accepted.
std::string canonical_image_type(const std::string& type) {
    if (type == "image/jpeg" || type == "image/jpg" || type == "image/pjpeg") return "image/jpeg";
    if (type == "image/png" || type == "image/webp" || type == "image/bmp") return type;
    if (type == "image/x-ms-bmp" || type == "image/x-bmp") return "image/bmp";
    if (type == "application/octet-stream") return type;
    return {};
}

// The Content-Type of a raw (non-multipart) image body; throws 415 with a hint when it is not one.
std::string raw_body_type(const std::string& header) {
    const std::string how = std::string("send the photo as the body with Content-Type ") + accepted_image_types() +
                            ", or as multipart/form-data with a file field `image`";
    if (trim(header).empty()) unsupported_type("the request has no Content-Type; " + how);
    auto mt = parse_media_type(header);
    if (!mt) unsupported_type("Content-Type '" + shown(header) + "' is not a media type; " + how);
    if (mt->type == "multipart/form-data")
        unsupported_type("the multipart/form-data body could not be read as multipart: write the media type in lower "
                         "case with a boundary parameter (multipart/form-data; boundary=...)");
    if (mt->type.rfind("multipart/", 0) == 0)
        unsupported_type(mt->type + " is not supported; use multipart/form-data with a file field `image`");
    if (mt->type == "application/x-www-form-urlencoded")
        unsupported_type("Content-Type application/x-www-form-urlencoded is not an image (curl --data-binary sends it "
                         "unless told otherwise: add -H 'Content-Type: image/jpeg'); " + how);
    std::string canonical = canonical_image_type(mt->type);
    if (canonical.empty()) unsupported_type("Content-Type " + shown(mt->type) + " is not supported; " + how);
    return canonical;
}

// Checks and copies the image bytes; `declared` is the canonical declared type or "".
void set_image(Bytes& image, std::string& content_type, const std::string& bytes, const std::string& declared,
               const ParseLimits& limits, const std::string& what) {
    if (bytes.empty()) bad_request(what + " is empty: it should be the photo (JPEG, PNG, WebP or BMP)");
    if (bytes.size() > limits.max_image_bytes)
        too_large("the image is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                  std::to_string(limits.max_image_bytes) + " (limits.max_body_bytes)");
    image.assign(bytes.begin(), bytes.end());
    if (!declared.empty() && declared != "application/octet-stream") {
        content_type = declared;
    } else {
        content_type = sniff_image_type(bytes);
        if (content_type.empty()) content_type = "application/octet-stream";
    }
}

// The declared type of a multipart `image` field: "" when the part has none; 415 when not an image.
std::string part_image_type(const FormPart& part) {
    if (trim(part.content_type).empty()) return {};
    auto mt = parse_media_type(part.content_type);
    std::string canonical = mt ? canonical_image_type(mt->type) : std::string();
    if (canonical.empty())
        unsupported_type("the `image` field's Content-Type is '" + shown(part.content_type) + "'; expected " +
                         accepted_image_types());
    return canonical;
}

const FormPart* only_part(const Upload& upload, const std::string& name) {
    const FormPart* found = nullptr;
    for (const auto& p : upload.parts)
        if (p.name == name) {
            if (found) bad_request("the multipart body has more than one `" + name + "` field");
            found = &p;
        }
    return found;
}

const FormPart& image_part(const Upload& upload) {
    const FormPart* image = only_part(upload, "image");
    if (!image)
        bad_request("the multipart body has no `image` field: send the photo as a file field named image "
                    "(curl -F image=@photo.jpg)");
    return *image;
}

void add_client_field(std::map<std::string, std::string>& fields, const std::string& name, const std::string& value,
                      const ParseLimits& limits, const char* kind) {
    if (name.empty() || name.size() > kMaxFieldNameLength ||
        !std::all_of(name.begin(), name.end(), [](unsigned char c) {
            return std::isalnum(c) || c == '_' || c == '.' || c == '-';
        }))
        bad_request(std::string(kind) + " name '" + shown(name) + "' is not valid (1-64 characters of A-Z a-z 0-9 _ . -)");
    if (value.size() > limits.max_field_bytes)
        too_large(std::string(kind) + " '" + name + "' is " + std::to_string(value.size()) + " bytes, over the limit of " +
                  std::to_string(limits.max_field_bytes));
    if (!is_valid_utf8(value)) bad_request(std::string(kind) + " '" + name + "' is not valid UTF-8 text");
    if (fields.count(name)) bad_request("client field '" + name + "' is given twice");
    if (fields.size() >= limits.max_fields)
        too_large("more than " + std::to_string(limits.max_fields) + " client fields");
    fields.emplace(name, value);
}

// Depth of JSON nesting, strings skipped; stops counting past `limit`.
std::size_t json_depth(std::string_view text, std::size_t limit) {
    std::size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) return deepest;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

const char* json_kind(const nlohmann::json& j) {
    switch (j.type()) {
        case nlohmann::json::value_t::array: return "an array";
        case nlohmann::json::value_t::string: return "a string";
        case nlohmann::json::value_t::boolean: return "a boolean";
        case nlohmann::json::value_t::null: return "null";
        case nlohmann::json::value_t::object: return "an object";
        default: return "a number";
    }
}

}  // namespace

std::optional<MediaType> parse_media_type(std::string_view header) {
    std::string_view rest = trim(header);
    auto semi = rest.find(';');
    std::string_view type = trim(rest.substr(0, semi));
    auto slash = type.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == type.size()) return std::nullopt;
    for (std::size_t i = 0; i < type.size(); ++i)
        if (i != slash && !is_tchar(static_cast<unsigned char>(type[i]))) return std::nullopt;
    MediaType mt;
    mt.type = lower(type);
    while (semi != std::string_view::npos) {
        rest = rest.substr(semi + 1);
        semi = rest.find(';');
        std::string_view param = trim(rest.substr(0, semi));
        auto eq = param.find('=');
        if (eq == std::string_view::npos || eq == 0) continue;
        std::string_view value = trim(param.substr(eq + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
        mt.params[lower(trim(param.substr(0, eq)))] = std::string(value);
    }
    return mt;
}

bool is_accepted_image_type(const std::string& media_type) { return !canonical_image_type(media_type).empty(); }

const char* accepted_image_types() { return "image/jpeg, image/png, image/webp, image/bmp or application/octet-stream"; }

std::string sniff_image_type(std::string_view b) {
    auto starts = [&](std::string_view magic, std::size_t at = 0) {
        return b.size() >= at + magic.size() && b.substr(at, magic.size()) == magic;
    };
    if (starts("\xFF\xD8\xFF")) return "image/jpeg";
    if (starts("\x89PNG\r\n\x1A\n")) return "image/png";
    if (starts("RIFF") && starts("WEBP", 8)) return "image/webp";
    if (starts("BM")) return "image/bmp";
    return {};
}

Request parse_recognize(const Upload& upload, const ParseLimits& limits) {
    Request r;
    if (upload.multipart) {
        const FormPart& image = image_part(upload);
        const std::string declared = part_image_type(image);
        for (const auto& p : upload.parts) {
            if (&p == &image) continue;
            if (!p.filename.empty())
                bad_request("field '" + shown(p.name) + "' is a file; only `image` may be (the other fields are client "
                            "fields such as pos_x)");
            add_client_field(r.client_fields, p.name, p.content, limits, "client field");
        }
        set_image(r.image, r.content_type, image.content, declared, limits, "the `image` field");
    } else {
        const std::string declared = raw_body_type(upload.content_type);
        set_image(r.image, r.content_type, upload.body, declared, limits, "the request body");
    }
    for (const auto& [name, value] : upload.query) add_client_field(r.client_fields, name, value, limits, "query parameter");
    return r;
}

GalleryUpload parse_gallery_upload(const Upload& upload, const ParseLimits& limits) {
    GalleryUpload g;
    if (upload.multipart) {
        for (const auto& p : upload.parts)
            if (p.name != "image" && p.name != "metadata")
                bad_request("unknown field '" + shown(p.name) + "' in a gallery upload (allowed: image, metadata)");
        const FormPart& image = image_part(upload);
        const std::string declared = part_image_type(image);
        if (const FormPart* meta = only_part(upload, "metadata")) g.metadata_json = normalise_metadata(meta->content, limits);
        set_image(g.image, g.content_type, image.content, declared, limits, "the `image` field");
    } else {
        const std::string declared = raw_body_type(upload.content_type);
        set_image(g.image, g.content_type, upload.body, declared, limits, "the request body");
    }
    return g;
}

std::string normalise_metadata(std::string_view text, const ParseLimits& limits) {
    if (text.size() > limits.max_metadata_bytes)
        too_large("metadata is " + std::to_string(text.size()) + " bytes, over the limit of " +
                  std::to_string(limits.max_metadata_bytes));
    if (trim(text).empty()) bad_request("metadata is empty: omit the field for no metadata, or send {}");
    if (json_depth(text, limits.max_metadata_depth) > limits.max_metadata_depth)
        bad_request("metadata nests deeper than " + std::to_string(limits.max_metadata_depth) + " levels");
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        std::string why = e.what();
        if (auto end = why.find("] "); why.rfind("[json.exception.", 0) == 0 && end != std::string::npos)
            why = why.substr(end + 2);
        // The parser quotes the bytes it stopped at, which may be anything the client sent.
        bad_request("metadata is not JSON: " + escaped(why));
    }
    if (!parsed.is_object()) bad_request(std::string("metadata must be a JSON object, found ") + json_kind(parsed));
    try {
        return parsed.dump();
    } catch (const nlohmann::json::exception& e) {
        bad_request(std::string("metadata cannot be stored: ") + e.what());
    }
}

std::optional<std::string> invalid_item_id_reason(std::string_view id) { return sightline::invalid_item_id_reason(id); }

std::optional<std::string> invalid_request_id_reason(std::string_view id) {
    if (id.empty()) return "the request id is empty";
    if (id.size() > 128) return "the request id is longer than 128 characters";
    for (char c : id)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            return std::string("the request id contains '") +
                   (c >= 32 && c < 127 ? std::string(1, c) : std::string("?")) + "' (allowed: A-Z a-z 0-9 . _ -)";
    return std::nullopt;
}

ListQuery parse_list_query(const QueryParams& query, std::size_t max_page) {
    ListQuery q;
    q.limit = std::min<std::size_t>(100, std::max<std::size_t>(1, max_page));
    bool seen_limit = false, seen_after = false;
    for (const auto& [name, value] : query) {
        if (name == "limit") {
            if (seen_limit) bad_request("limit is given twice");
            seen_limit = true;
            if (value.empty() || value.size() > 9 ||
                !std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); }))
                bad_request("limit must be a whole number from 1 to " + std::to_string(max_page) + ", found '" +
                            shown(value) + "'");
            std::size_t v = std::stoul(value);
            if (v == 0) bad_request("limit must be at least 1");
            q.limit = std::min(v, std::max<std::size_t>(1, max_page));
        } else if (name == "after") {
            if (seen_after) bad_request("after is given twice");
            seen_after = true;
            if (!value.empty())
                if (auto why = invalid_item_id_reason(value)) bad_request("after: " + *why);
            q.after = value;
        }
    }
    return q;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    std::string_view s = trim(authorization);
    if (s.size() < 7 || lower(s.substr(0, 6)) != "bearer" || (s[6] != ' ' && s[6] != '\t')) return std::nullopt;
    std::string_view token = trim(s.substr(7));
    if (token.empty()) return std::nullopt;
    return token;
}

bool constant_time_equal(std::string_view given, std::string_view expected) {
    unsigned acc = given.size() == expected.size() ? 0u : 1u;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
        acc |= static_cast<unsigned>(g ^ static_cast<unsigned char>(expected[i]));
#if defined(__GNUC__)
        __asm__ __volatile__("" : "+r"(acc));  // keeps the compiler from ending the loop early
#endif
    }
    return acc == 0;
}

ListenAddress parse_listen(std::string_view text) {
    std::string_view t = trim(text);
    ListenAddress a;
    std::string_view port;
    if (!t.empty() && t.front() == '[') {
        auto close = t.find(']');
        if (close == std::string_view::npos || close + 1 >= t.size() || t[close + 1] != ':')
            throw std::invalid_argument("expected [ipv6-address]:port, found '" + shown(t) + "'");
        a.host = std::string(t.substr(1, close - 1));
        port = t.substr(close + 2);
        if (a.host.empty()) throw std::invalid_argument("the address in brackets is empty");
    } else {
        auto colon = t.rfind(':');
        if (colon == std::string_view::npos) throw std::invalid_argument("expected host:port, found '" + shown(t) + "'");
        a.host = std::string(t.substr(0, colon));
        port = t.substr(colon + 1);
        if (a.host.find(':') != std::string::npos)
            throw std::invalid_argument("write an IPv6 address in brackets: [" + shown(a.host) + "]:port");
        if (a.host.empty()) a.host = "0.0.0.0";
    }
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }))
        throw std::invalid_argument("the port must be a number from 0 to 65535, found '" + shown(port) + "'");
    a.port = std::stoi(std::string(port));
    if (a.port > 65535) throw std::invalid_argument("the port must be a number from 0 to 65535, found " + std::string(port));
    return a;
}

bool is_valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n;
        std::uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) n = 3, cp = c & 0x07;
        else return false;
        if (i + n >= s.size()) return false;  // cut short
        for (std::size_t k = 1; k <= n; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

std::string escaped(std::string_view s, std::size_t max) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min(s.size(), max) + 8);
    for (char ch : s.substr(0, max)) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\\') {
            out += "\\\\";
        } else if (c >= 32 && c < 127) {
            out += ch;
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    if (s.size() > max) out += "...";
    return out;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        } else if (plus_is_space && s[i] == '+') {
            out += ' ';
        } else {
            out += s[i];
        }
    }
    return out;
}

Target parse_target(std::string_view target) {
    Target t;
    const auto question = target.find('?');
    t.path = percent_decode(target.substr(0, question), false);
    if (question == std::string_view::npos) return t;
    std::string_view rest = target.substr(question + 1);
    if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
        if (pair.empty()) continue;
        const auto eq = pair.find('=');
        t.query.emplace_back(percent_decode(pair.substr(0, eq), true),
                             eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1), true));
    }
    return t;
}

namespace {

// One parameter of a Content-Disposition header: name="a b", name=token; nullopt when absent.
std::optional<std::string> disposition_param(std::string_view header, std::string_view wanted) {
    std::size_t i = header.find(';');
    while (i != std::string_view::npos && i < header.size()) {
        ++i;
        while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
        const auto eq = header.find('=', i);
        if (eq == std::string_view::npos) return std::nullopt;
        const std::string key = lower(trim(header.substr(i, eq - i)));
        std::size_t v = eq + 1;
        while (v < header.size() && (header[v] == ' ' || header[v] == '\t')) ++v;
        std::string value;
        if (v < header.size() && header[v] == '"') {
            ++v;
            bool closed = false;
            for (; v < header.size(); ++v) {
                if (header[v] == '\\' && v + 1 < header.size()) {
                    value += header[++v];
                } else if (header[v] == '"') {
                    closed = true;
                    ++v;
                    break;
                } else {
                    value += header[v];
                }
            }
            if (!closed) bad_request("the multipart body is malformed: an unterminated quoted string in Content-Disposition");
            i = header.find(';', v);
        } else {
            const auto end = header.find(';', v);
            value = std::string(trim(header.substr(v, end == std::string_view::npos ? std::string_view::npos : end - v)));
            i = end;
        }
        if (key == wanted) return value;
    }
    return std::nullopt;
}

}  // namespace

std::vector<FormPart> parse_multipart(std::string_view body, std::string_view boundary, std::size_t max_parts,
                                      const PartCap& part_cap) {
    static const std::string kMalformed = "the multipart/form-data body is malformed or cut short";
    if (boundary.empty() || boundary.size() > 200)
        bad_request("the multipart/form-data Content-Type needs a boundary parameter of 1-200 characters");
    const std::string delimiter = "--" + std::string(boundary);
    const std::string next_delimiter = "\r\n" + delimiter;
    std::vector<FormPart> parts;
    std::size_t pos = body.find(delimiter);  // anything before it is a preamble, ignored
    if (pos == std::string_view::npos || (pos != 0 && (pos < 2 || body.substr(pos - 2, 2) != "\r\n")))
        bad_request(kMalformed + " (no opening boundary)");
    pos += delimiter.size();
    while (true) {
        if (body.substr(pos, 2) == "--") return parts;  // the closing delimiter; an epilogue is ignored
        while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
        if (body.substr(pos, 2) != "\r\n") bad_request(kMalformed);
        pos += 2;
        FormPart part;
        bool named = false;
        // Header lines up to an empty line.
        while (true) {
            const auto eol = body.find("\r\n", pos);
            if (eol == std::string_view::npos) bad_request(kMalformed + " (a field's headers do not end)");
            const std::string_view line = body.substr(pos, eol - pos);
            pos = eol + 2;
            if (line.empty()) break;
            if (line.size() > 8192) bad_request(kMalformed + " (a field header line is over 8192 bytes)");
            const auto colon = line.find(':');
            if (colon == std::string_view::npos) bad_request(kMalformed + " (a field header line has no ':')");
            const std::string name = lower(trim(line.substr(0, colon)));
            const std::string_view value = trim(line.substr(colon + 1));
            if (name == "content-disposition") {
                if (lower(trim(value.substr(0, value.find(';')))) != "form-data")
                    bad_request("a multipart field's Content-Disposition is not form-data");
                auto field = disposition_param(value, "name");
                if (!field) bad_request("a multipart field has no name in its Content-Disposition");
                part.name = *field;
                part.filename = disposition_param(value, "filename").value_or("");
                named = true;
            } else if (name == "content-type") {
                part.content_type = std::string(value);
            }
        }
        if (!named) bad_request("a multipart field has no Content-Disposition: form-data; name=\"...\" header");
        const auto end = body.find(next_delimiter, pos);
        if (end == std::string_view::npos) bad_request(kMalformed + " (a field does not end with the boundary)");
        if (parts.size() >= max_parts)
            too_large("the multipart body has more than " + std::to_string(max_parts) + " fields");
        const std::uint64_t cap = part_cap(part.name);
        if (end - pos > cap)
            too_large("multipart field '" + escaped(part.name, 64) + "' is over its limit of " + std::to_string(cap) +
                      " bytes" + (part.name == "image" ? " (limits.max_body_bytes)" : ""));
        part.content.assign(body.substr(pos, end - pos));
        parts.push_back(std::move(part));
        pos = end + next_delimiter.size();
    }
}

std::string json_text(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace sightline::http
