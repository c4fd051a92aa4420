#pragma once
#include <sightline/storage.hpp>

#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sightline::host {

// Item ids: 1–128 characters of [A-Za-z0-9._-], not starting with '.'.
std::optional<std::string> invalid_id_reason(const std::string& id);

// The reference items in a storage. Layout under the configured prefixes:
//   images/<id>.item                 the item: its image's name, size and checksum, and its
//                                    metadata (JSON); one object, so one atomic put changes both
//   images/<id>/<16 hex>.<jpg|png|webp|bmp>   the reference image as uploaded, under a fresh name
//                                    per change
//   features/<signature hash>/<id>.rec   one feature record per extractor signature
//   features/signatures/<signature hash> a marker per signature that has records (its text), so
//                                        removing an item looks in each signature's place instead
//                                        of listing every record of every item
// Galleries written before item records existed, and images copied in by hand, are read as they
// are: images/<id>.<jpg|png|webp|bmp> with its metadata in images/<id>.json; the next put of such
// an item moves it to the layout above.
class Gallery {
public:
    Gallery(std::shared_ptr<Storage> storage, std::string images_prefix, std::string features_prefix);

    std::vector<std::string> ids() const;
    bool contains(const std::string& id) const;

    struct Item {
        Bytes image;
        std::string metadata;  // a JSON object
        // The image matched the size and checksum stored with it. False for the old layout, which
        // has none: a caller that must not hand out a damaged image decodes it.
        bool verified = false;
    };
    // The item's image and metadata, or nullopt if there is no such item. Throws Error(data_loss),
    // naming the item and no storage location, if what is stored is damaged: a missing or
    // truncated image, one that does not match its checksum, metadata that is not a JSON object.
    std::optional<Item> item(const std::string& id) const;
    std::optional<Bytes> image(const std::string& id) const;  // item(id)'s image
    std::string metadata(const std::string& id) const;  // item(id)'s metadata; "{}" when there is none

    struct RecordBytes {
        std::string signature;
        Bytes bytes;  // encode_record's
    };
    // Stores the image (format read from its header) and metadata, replacing an existing item, as
    // one change: if it throws, nothing of the new item is visible and the old one is as it was
    // (its records may be missing if they could not be put back: they are recomputed from its
    // image). `records` (the new image's) are stored after the change; one that cannot be is
    // logged and recomputed at the next start.
    void put(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json,
             const std::vector<RecordBytes>& records = {});
    // Removes image, metadata and every feature record of the item; false if there was none.
    bool remove(const std::string& id);

    std::string record_key(const std::string& signature, const std::string& id) const;
    std::optional<Bytes> record(const std::string& signature, const std::string& id) const;
    void put_record(const std::string& signature, const std::string& id, std::span<const std::uint8_t> bytes);
    // Before an item's image is replaced: its records describe the old image.
    void remove_record(const std::string& signature, const std::string& id);

    Storage& storage() const { return *storage_; }

    // The change journal: put() and remove() first write an empty object
    // <features>journal/<seq>.<id> (the write-ahead log of index snapshots), so a snapshot made at
    // journal position S plus the items touched after S is the whole gallery. Replay is by
    // gallery state (the item exists: index it; it does not: drop it), so a change cut short by
    // a crash replays as whatever it left behind. One writing process per gallery.
    struct JournalEntry {
        std::uint64_t seq;
        std::string id;
    };
    std::uint64_t journal_head() const;  // the last position written (0: none)
    std::vector<JournalEntry> journal_since(std::uint64_t seq) const;  // entries after seq, in order
    void journal_truncate(std::uint64_t upto);  // drops entries at or before upto
    std::string snapshot_key(const std::string& signature) const;
    // Where GalleryLease keeps who is using the gallery.
    std::string lease_prefix() const { return features_ + "leases/"; }

private:
    void journal(const std::string& id);
    // The signature directories that may hold records: the markers, plus what this process wrote.
    std::set<std::string> signature_dirs() const;
    void mark_signature(const std::string& dir, const std::string& signature);
    struct Entry {
        std::string image_key;
        std::string metadata;
        bool legacy = false;  // images/<id>.<ext>: no size or checksum known
        std::uint64_t image_bytes = 0;
        std::string image_checksum;
    };
    // Where the item's image is and its metadata; nullopt if there is no such item. Throws
    // Error(data_loss) if its item record is damaged.
    std::optional<Entry> entry(const std::string& id) const;
    std::string item_key(const std::string& id) const;
    std::optional<std::string> legacy_image_key(const std::string& id) const;
    // Removes the item's images other than `keep`, and its legacy metadata.
    void remove_stale(const std::string& id, const std::string& keep);
    std::shared_ptr<Storage> storage_;
    std::string images_;
    std::string features_;
    mutable std::mutex journal_mutex_;
    std::uint64_t journal_seq_ = 0;
    mutable std::mutex signatures_mutex_;
    std::set<std::string> marked_;    // signature directories with a marker
    std::set<std::string> unmarked_;  // found at start-up without one (the marker could not be written)
};

void check_id(const std::string& id);

}  // namespace sightline::host
