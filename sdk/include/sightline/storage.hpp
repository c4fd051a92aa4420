#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sightline/plugin_base.hpp"

namespace sightline {

using Bytes = std::vector<std::uint8_t>;

// A blob store. Keys are relative paths of [A-Za-z0-9._/-] with no ".." segment and no leading "/";
// an invalid key is an ErrorCode::invalid_argument. A put is atomic: readers see the old or the new
// object, never part of one.
class SIGHTLINE_API Storage : public Plugin {
public:
    virtual void put(const std::string& key, std::span<const std::uint8_t> bytes) = 0;
    virtual std::optional<Bytes> get(const std::string& key) const = 0;
    virtual bool remove(const std::string& key) = 0;  // false if there was nothing to remove
    virtual bool exists(const std::string& key) const = 0;
    // Every key that starts with prefix, sorted.
    virtual std::vector<std::string> list(const std::string& prefix) const = 0;
};

// The key rule, shared by every storage so they refuse exactly the same keys.
inline std::optional<std::string> invalid_key_reason(const std::string& key, std::size_t max_length = 1024) {
    if (key.empty()) return "key is empty";
    if (key.size() > max_length)
        return "key is " + std::to_string(key.size()) + " bytes long (at most " + std::to_string(max_length) + ")";
    if (key.front() == '/') return "key starts with '/' (keys are relative)";
    for (char c : key) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-' || c == '/';
        if (!ok) {
            if (c == '\0') return std::string("key contains a NUL byte");
            char buf[8];
            std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned char>(c));
            return std::string("key contains the character ") + buf + " (allowed: A-Z a-z 0-9 . _ / -)";
        }
    }
    std::size_t start = 0;
    while (start <= key.size()) {
        std::size_t end = key.find('/', start);
        if (end == std::string::npos) end = key.size();
        std::string segment = key.substr(start, end - start);
        if (segment.empty()) return "key has an empty path segment";
        if (segment == "." || segment == "..") return "key has a '" + segment + "' segment";
        start = end + 1;
    }
    return std::nullopt;
}

inline void check_key(const std::string& key) {
    if (auto why = invalid_key_reason(key)) {
        std::string shown;
        for (char c : key.substr(0, 80)) shown += (c >= 32 && c < 127) ? c : '?';
        throw Error(ErrorCode::invalid_argument, "invalid storage key '" + shown + "': " + *why);
    }
}

}  // namespace sightline
