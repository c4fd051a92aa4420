#include "sightline/host/gallery.hpp"

#include <sightline/item_id.hpp>

#include <nlohmann/json.hpp>
#include <sightline/serialize.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>
#include <set>

#include "sightline/host/decode.hpp"
#include "sightline/host/host.hpp"

namespace sightline::host {

namespace {
const char* const kImageExtensions[] = {"jpg", "png", "webp", "bmp"};
const char* const kItemExtension = "item";

std::string extension_for(const std::string& format) { return format == "jpeg" ? "jpg" : format; }

std::string signature_dir(const std::string& signature) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx",
                  static_cast<unsigned long long>(fnv1a64(signature.data(), signature.size())));
    return buf;
}

// A stored image's name in an item record: <16 hex>.<image extension>, nothing that leads elsewhere.
bool valid_blob_name(const std::string& name) {
    auto dot = name.find('.');
    if (dot != 16) return false;
    for (std::size_t i = 0; i < dot; ++i)
        if (!std::isxdigit(static_cast<unsigned char>(name[i]))) return false;
    const std::string ext = name.substr(dot + 1);
    return std::find(std::begin(kImageExtensions), std::end(kImageExtensions), ext) != std::end(kImageExtensions);
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
    std::set<std::string> out;
    for (const auto& key : storage_->list(images_)) {
        std::string name = key.substr(images_.size());
        auto dot = name.rfind('.');
        if (dot == std::string::npos || name.find('/') != std::string::npos) continue;
        std::string ext = name.substr(dot + 1), id = name.substr(0, dot);
        if (ext == kItemExtension || std::find(std::begin(kImageExtensions), std::end(kImageExtensions), ext) !=
                                         std::end(kImageExtensions))
            out.insert(std::move(id));
    }
    return {out.begin(), out.end()};
}

std::string Gallery::item_key(const std::string& id) const { return images_ + id + "." + kItemExtension; }

std::optional<std::string> Gallery::legacy_image_key(const std::string& id) const {
    for (const char* e : kImageExtensions) {
        std::string key = images_ + id + "." + e;
        if (storage_->exists(key)) return key;
    }
    return std::nullopt;
}

bool Gallery::contains(const std::string& id) const {
    if (invalid_id_reason(id)) return false;
    return storage_->exists(item_key(id)) || legacy_image_key(id).has_value();
}

namespace {
Error damaged(const std::string& id, const std::string& why) {
    return Error(ErrorCode::data_loss, "gallery item '" + id + "' is damaged: " + why + "; put it again (PUT /v1/gallery/" +
                                           id + " or sightline ingest) or remove it");
}

std::string hex64(std::uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}
}  // namespace

std::optional<Gallery::Entry> Gallery::entry(const std::string& id) const {
    if (auto bytes = storage_->get(item_key(id))) {
        auto j = nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, false);
        if (j.is_discarded() || !j.is_object()) throw damaged(id, "its item record is not JSON");
        const auto image = j.value("image", std::string());
        const auto meta = j.find("metadata");
        const auto size = j.find("bytes");
        const auto sum = j.find("fnv1a64");
        if (!valid_blob_name(image) || meta == j.end() || !meta->is_object() || size == j.end() ||
            !size->is_number_unsigned() || sum == j.end() || !sum->is_string())
            throw damaged(id, "its item record lacks the image's name, size or checksum, or the metadata");
        Entry e;
        e.image_key = images_ + id + "/" + image;
        e.metadata = meta->dump();
        e.image_bytes = size->get<std::uint64_t>();
        e.image_checksum = sum->get<std::string>();
        return e;
    }
    auto key = legacy_image_key(id);
    if (!key) return std::nullopt;
    Entry e;
    e.image_key = *key;
    e.legacy = true;
    e.metadata = "{}";
    if (auto meta = storage_->get(images_ + id + ".json")) {
        auto j = nlohmann::json::parse(meta->begin(), meta->end(), nullptr, false);
        if (j.is_discarded() || !j.is_object()) throw damaged(id, "its metadata is not a JSON object");
        e.metadata = j.dump();
    }
    return e;
}

std::optional<Gallery::Item> Gallery::item(const std::string& id) const {
    check_id(id);
    auto e = entry(id);
    if (!e) return std::nullopt;
    auto image = storage_->get(e->image_key);
    // Gone between reading the entry and the image: removed meanwhile, unless its record remains.
    if (!image) {
        if (!e->legacy && storage_->exists(item_key(id))) throw damaged(id, "its image is missing");
        return std::nullopt;
    }
    Item item{std::move(*image), std::move(e->metadata), !e->legacy};
    if (!e->legacy) {
        if (item.image.size() != e->image_bytes)
            throw damaged(id, "its image is " + std::to_string(item.image.size()) + " bytes, " +
                                  std::to_string(e->image_bytes) + " expected");
        if (hex64(fnv1a64(item.image.data(), item.image.size())) != e->image_checksum)
            throw damaged(id, "its image does not match its checksum");
    }
    return item;
}

std::optional<Bytes> Gallery::image(const std::string& id) const {
    auto i = item(id);
    if (!i) return std::nullopt;
    return std::move(i->image);
}

std::string Gallery::metadata(const std::string& id) const {
    check_id(id);
    auto e = entry(id);
    return e ? e->metadata : "{}";
}

namespace {
std::string random_name() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    return buf;
}

std::span<const std::uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
}  // namespace

void Gallery::put(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json,
                  const std::vector<RecordBytes>& records) {
    check_id(id);
    auto header = probe_image(image);
    auto parsed = nlohmann::json::parse(metadata_json.empty() ? "{}" : metadata_json, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object())
        throw Error(ErrorCode::invalid_argument, "metadata for item '" + id + "' is not a JSON object");
    auto log = make_logger("gallery");
    // The new image goes to a name of its own and the item record, one atomic put, switches to it
    // and its metadata together: until then the old item is whole, afterwards the new one is.
    const std::string blob_name = random_name() + "." + extension_for(header.format);
    const std::string blob = images_ + id + "/" + blob_name;
    const std::string item = nlohmann::json{{"image", blob_name},
                                            {"bytes", image.size()},
                                            {"fnv1a64", hex64(fnv1a64(image.data(), image.size()))},
                                            {"metadata", parsed}}
                                 .dump();
    journal(id);
    storage_->put(blob, image);
    // The old image's records go before the switch (a crash after it must not leave them describing
    // the new image); kept here to be put back if the switch fails.
    std::vector<std::pair<std::string, Bytes>> old_records;
    try {
        for (const auto& dir : signature_dirs()) {
            const std::string key = features_ + dir + "/" + id + ".rec";
            if (auto bytes = storage_->get(key)) {
                old_records.emplace_back(key, std::move(*bytes));
                storage_->remove(key);
            }
        }
        storage_->put(item_key(id), bytes_of(item));
    } catch (...) {
        auto undo = [&](const char* what, const std::string& key, auto&& f) {
            try {
                f();
            } catch (const std::exception& e) {
                log->warn("item '{}': could not {} {} after a failed change: {}", id, what, key, e.what());
            }
        };
        undo("remove", blob, [&] { storage_->remove(blob); });
        // A record not put back is recomputed from the (unchanged) image at the next start.
        for (const auto& [key, bytes] : old_records) undo("put back", key, [&] { storage_->put(key, bytes); });
        throw;
    }
    // Committed. What follows tidies up: a failure there is logged, not reported, since the change
    // is visible. A missing record is recomputed at the next start; a stale image is garbage the
    // next change of the item removes.
    for (const auto& r : records) {
        try {
            put_record(r.signature, id, r.bytes);
        } catch (const std::exception& e) {
            log->warn("item '{}': its feature record could not be stored ({}); it is recomputed at the next start",
                      id, e.what());
        }
    }
    try {
        remove_stale(id, blob);
    } catch (const std::exception& e) {
        log->warn("item '{}': its previous image could not be removed: {}", id, e.what());
    }
}

void Gallery::remove_stale(const std::string& id, const std::string& keep) {
    for (const auto& key : storage_->list(images_ + id + "/"))
        if (key != keep) storage_->remove(key);
    for (const char* e : kImageExtensions) storage_->remove(images_ + id + "." + e);
    storage_->remove(images_ + id + ".json");
}

bool Gallery::remove(const std::string& id) {
    check_id(id);
    const bool existed = contains(id);
    if (existed) journal(id);
    // Records first: a crash before the item goes leaves it without records, which the next start
    // recomputes; the other way round they would outlive it.
    for (const auto& dir : signature_dirs()) storage_->remove(features_ + dir + "/" + id + ".rec");
    bool removed = storage_->remove(item_key(id));
    for (const char* e : kImageExtensions) removed |= storage_->remove(images_ + id + "." + e);
    try {
        remove_stale(id, {});
    } catch (const std::exception& e) {
        make_logger("gallery")->warn("item '{}': removed, but not all of its files: {}", id, e.what());
    }
    return removed || existed;
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
