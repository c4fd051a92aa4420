#pragma once
#include <cctype>
#include <optional>
#include <string>
#include <string_view>

namespace sightline {

// Gallery item ids: 1–128 characters of [A-Za-z0-9._-], not starting with '.'. They become storage
// keys and URL path segments, so the rule is one for the host and every transport.
inline std::optional<std::string> invalid_item_id_reason(std::string_view id) {
    if (id.empty()) return "the id is empty";
    if (id.size() > 128) return "the id is longer than 128 characters";
    if (id[0] == '.') return "the id starts with '.'";
    for (char c : id)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
            return std::string("the id contains '") + (c >= 32 && c < 127 ? std::string(1, c) : std::string("?")) +
                   "' (allowed: A-Z a-z 0-9 . _ -)";
    return std::nullopt;
}

}  // namespace sightline
