#pragma once
// The byte format fuzz_http_request reads, shared with its seed generator. One input describes
// what an HTTP request to the transport carried (request_parsing.hpp's Upload):
//   byte 0            flags: bit 0 = the body was read as multipart/form-data
//   u16 + bytes       the Content-Type header
//   u16 + bytes       the query string, "a=1&b=2" (already percent-decoded, as parse_target leaves it)
//   multipart:        parts until the input ends, each: u16 name, u16 filename, u16 content type,
//                     u32 content (every length is cut to what is left)
//   otherwise:        the rest of the input is the body
// Lengths are little-endian. http_request_seeds.cpp writes the same format (kept free of the SDK
// headers, which the seed generator is built without).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "request_parsing.hpp"

namespace sightline::fuzz {

class InputReader {
public:
    explicit InputReader(std::string_view data) : data_(data) {}
    bool empty() const { return pos_ >= data_.size(); }
    std::uint8_t byte() { return empty() ? 0 : static_cast<std::uint8_t>(data_[pos_++]); }
    std::string field(int length_bytes) {
        std::size_t n = 0;
        for (int i = 0; i < length_bytes; ++i) n |= static_cast<std::size_t>(byte()) << (8 * i);
        n = std::min(n, data_.size() - std::min(pos_, data_.size()));
        std::string out(data_.substr(std::min(pos_, data_.size()), n));
        pos_ += n;
        return out;
    }
    std::string rest() {
        std::string out(data_.substr(std::min(pos_, data_.size())));
        pos_ = data_.size();
        return out;
    }

private:
    std::string_view data_;
    std::size_t pos_ = 0;
};

inline http::QueryParams split_query(const std::string& q) {
    http::QueryParams out;
    std::size_t start = 0;
    while (start <= q.size()) {
        std::size_t amp = q.find('&', start);
        std::string item = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
        if (!item.empty()) {
            std::size_t eq = item.find('=');
            out.emplace_back(item.substr(0, eq), eq == std::string::npos ? std::string() : item.substr(eq + 1));
        }
        if (amp == std::string::npos) break;
        start = amp + 1;
    }
    return out;
}

inline http::Upload decode_input(std::string_view data) {
    InputReader in(data);
    http::Upload up;
    up.multipart = (in.byte() & 1) != 0;
    up.content_type = in.field(2);
    up.query = split_query(in.field(2));
    if (up.multipart) {
        while (!in.empty()) {
            http::FormPart p;
            p.name = in.field(2);
            p.filename = in.field(2);
            p.content_type = in.field(2);
            p.content = in.field(4);
            up.parts.push_back(std::move(p));
        }
    } else {
        up.body = in.rest();
    }
    return up;
}

}  // namespace sightline::fuzz
