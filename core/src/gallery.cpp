#include "sightline/host/gallery.hpp"

#include <sightline/item_id.hpp>

#include <nlohmann/json.hpp>
#include <sightline/serialize.hpp>

#include <algorithm>
#include <cstdio>

#include "sightline/host/decode.hpp"

namespace sightline::host {

namespace {
const char* const kImageExtensions[] = {"jpg", "png", "webp", "bmp"};

std::string extension_for(const std::string& format) { return format == "jpeg" ? "jpg" : format; }

std::string signature_dir(const std::string& signature) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx",
                  static_cast<unsigned long long>(fnv1a64(signature.data(), signature.size())));
    return buf;
}

std::string with_slash(std::string prefix) {
    if (!prefix.empty() && prefix.back() != '/') prefix += '/';
    return prefix;
}
}  // namespace

std::optional<std::string> invalid_id_reason(const std::string& id) { return invalid_item_id_reason(id); }

void check_id(const std::string& id) {
    if (auto why = invalid_id_reason(id)) throw Error(ErrorCode::invalid_argument, "invalid item id: " + *why);
}

namespace {
bool is_signature_dir(const std::string& name) {
    return name.size() == 16 &&
           std::all_of(name.begin(), name.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}
}  // namespace

Gallery::Gallery(std::shared_ptr<Storage> storage, std::string images_prefix, std::string features_prefix)
    : storage_(std::move(storage)), images_(with_slash(images_prefix)), features_(with_slash(features_prefix)) {
    auto entries = journal_since(0);
    if (!entries.empty()) journal_seq_ = entries.back().seq;
    const std::string markers = features_ + "signatures/";
    for (const auto& key : storage_->list(markers)) marked_.insert(key.substr(markers.size()));
    if (marked_.empty()) {
        // A gallery written before the markers existed: find its signature directories once.
        std::set<std::string> found;
        for (const auto& key : storage_->list(features_)) {
            auto rest = key.substr(features_.size());
            auto slash = rest.find('/');
            if (slash != std::string::npos && is_signature_dir(rest.substr(0, slash))) found.insert(rest.substr(0, slash));
        }
        try {
            for (const auto& dir : found) mark_signature(dir, "");
        } catch (const Error&) {
            // A read-only storage: found again at the next start; removals still see these.
            unmarked_ = std::move(found);
        }
    }
}

void Gallery::mark_signature(const std::string& dir, const std::string& signature) {
    {
        std::lock_guard lock(signatures_mutex_);
        if (marked_.count(dir)) return;
    }
    // Written before the first record under it, so no record can exist without its marker.
    storage_->put(features_ + "signatures/" + dir,
                  std::span(reinterpret_cast<const std::uint8_t*>(signature.data()), signature.size()));
    std::lock_guard lock(signatures_mutex_);
    marked_.insert(dir);
}

std::set<std::string> Gallery::signature_dirs() const {
    const std::string markers = features_ + "signatures/";
    std::set<std::string> dirs;
    for (const auto& key : storage_->list(markers)) dirs.insert(key.substr(markers.size()));
    std::lock_guard lock(signatures_mutex_);
    dirs.insert(marked_.begin(), marked_.end());
    dirs.insert(unmarked_.begin(), unmarked_.end());
    return dirs;
}

namespace {
constexpr std::size_t kSeqDigits = 20;
}

void Gallery::journal(const std::string& id) {
    std::lock_guard lock(journal_mutex_);
    char seq[kSeqDigits + 1];
    std::snprintf(seq, sizeof seq, "%020llu", static_cast<unsigned long long>(journal_seq_ + 1));
    storage_->put(features_ + "journal/" + seq + "." + id, {});
    ++journal_seq_;
}

std::uint64_t Gallery::journal_head() const {
    std::lock_guard lock(journal_mutex_);
    return journal_seq_;
}

std::vector<Gallery::JournalEntry> Gallery::journal_since(std::uint64_t after) const {
    std::vector<JournalEntry> out;
    const std::string prefix = features_ + "journal/";
    for (const auto& key : storage_->list(prefix)) {
        std::string name = key.substr(prefix.size());
        if (name.size() <= kSeqDigits + 1 || name[kSeqDigits] != '.') continue;
        std::uint64_t seq = 0;
        bool digits = true;
        for (std::size_t i = 0; i < kSeqDigits; ++i) {
            if (name[i] < '0' || name[i] > '9') digits = false;
            seq = seq * 10 + static_cast<std::uint64_t>(name[i] - '0');
        }
        std::string id = name.substr(kSeqDigits + 1);
        if (!digits || invalid_id_reason(id) || seq <= after) continue;
        out.push_back({seq, std::move(id)});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
    return out;
}

void Gallery::journal_truncate(std::uint64_t upto) {
    char seq[kSeqDigits + 1];
    auto entries = journal_since(0);
    // The newest entry always stays: it carries the position across a restart.
    if (!entries.empty()) entries.pop_back();
    for (const auto& e : entries) {
        if (e.seq > upto) break;
        std::snprintf(seq, sizeof seq, "%020llu", static_cast<unsigned long long>(e.seq));
        storage_->remove(features_ + "journal/" + seq + "." + e.id);
    }
}

std::string Gallery::snapshot_key(const std::string& signature) const {
    return features_ + "snapshots/" + signature_dir(signature) + ".snap";
}

std::vector<std::string> Gallery::ids() const {
    std::vector<std::string> out;
    for (const auto& key : storage_->list(images_)) {
        std::string name = key.substr(images_.size());
        auto dot = name.rfind('.');
        if (dot == std::string::npos || name.find('/') != std::string::npos) continue;
        std::string ext = name.substr(dot + 1);
        for (const char* e : kImageExtensions)
            if (ext == e) {
                out.push_back(name.substr(0, dot));
                break;
            }
    }
    return out;
}

std::optional<std::string> Gallery::image_key(const std::string& id) const {
    for (const char* e : kImageExtensions) {
        std::string key = images_ + id + "." + e;
        if (storage_->exists(key)) return key;
    }
    return std::nullopt;
}

bool Gallery::contains(const std::string& id) const { return invalid_id_reason(id) ? false : image_key(id).has_value(); }

std::optional<Bytes> Gallery::image(const std::string& id) const {
    check_id(id);
    auto key = image_key(id);
    if (!key) return std::nullopt;
    return storage_->get(*key);
}

std::string Gallery::metadata(const std::string& id) const {
    check_id(id);
    auto bytes = storage_->get(images_ + id + ".json");
    if (!bytes) return "{}";
    return std::string(bytes->begin(), bytes->end());
}

void Gallery::put(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json) {
    check_id(id);
    auto header = probe_image(image);
    auto parsed = nlohmann::json::parse(metadata_json.empty() ? "{}" : metadata_json, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object())
        throw Error(ErrorCode::invalid_argument, "metadata for item '" + id + "' is not a JSON object");
    std::string key = images_ + id + "." + extension_for(header.format);
    journal(id);
    // Metadata first: an item becomes visible through its image, and then its metadata is there.
    std::string meta = parsed.dump();
    storage_->put(images_ + id + ".json", std::span(reinterpret_cast<const std::uint8_t*>(meta.data()), meta.size()));
    storage_->put(key, image);
    for (const char* e : kImageExtensions) {
        std::string other = images_ + id + "." + e;
        if (other != key) storage_->remove(other);
    }
}

bool Gallery::remove(const std::string& id) {
    check_id(id);
    if (contains(id)) journal(id);
    bool removed = false;
    for (const char* e : kImageExtensions) removed |= storage_->remove(images_ + id + "." + e);
    storage_->remove(images_ + id + ".json");
    for (const auto& dir : signature_dirs()) storage_->remove(features_ + dir + "/" + id + ".rec");
    return removed;
}

std::string Gallery::record_key(const std::string& signature, const std::string& id) const {
    return features_ + signature_dir(signature) + "/" + id + ".rec";
}

std::optional<Bytes> Gallery::record(const std::string& signature, const std::string& id) const {
    check_id(id);
    return storage_->get(record_key(signature, id));
}

void Gallery::put_record(const std::string& signature, const std::string& id, std::span<const std::uint8_t> bytes) {
    check_id(id);
    mark_signature(signature_dir(signature), signature);
    storage_->put(record_key(signature, id), bytes);
}

void Gallery::remove_record(const std::string& signature, const std::string& id) {
    check_id(id);
    storage_->remove(record_key(signature, id));
}

}  // namespace sightline::host
