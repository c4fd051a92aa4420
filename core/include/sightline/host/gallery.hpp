#pragma once
#include <sightline/storage.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sightline::host {

// Item ids: 1–128 characters of [A-Za-z0-9._-], not starting with '.'.
std::optional<std::string> invalid_id_reason(const std::string& id);

// The reference items in a storage. Layout under the configured prefixes:
//   images/<id>.<jpg|png|webp|bmp>   the reference image as uploaded
//   images/<id>.json                 its metadata (a JSON object)
//   features/<signature hash>/<id>.rec   one feature record per extractor signature
class Gallery {
public:
    Gallery(std::shared_ptr<Storage> storage, std::string images_prefix, std::string features_prefix);

    std::vector<std::string> ids() const;
    bool contains(const std::string& id) const;
    std::optional<Bytes> image(const std::string& id) const;
    std::string metadata(const std::string& id) const;  // "{}" when none was given

    // Stores the image (format read from its header) and metadata; replaces an existing item.
    void put(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json);
    // Removes image, metadata and every feature record of the item.
    bool remove(const std::string& id);

    std::string record_key(const std::string& signature, const std::string& id) const;
    std::optional<Bytes> record(const std::string& signature, const std::string& id) const;
    void put_record(const std::string& signature, const std::string& id, std::span<const std::uint8_t> bytes);

    Storage& storage() const { return *storage_; }

private:
    std::optional<std::string> image_key(const std::string& id) const;
    std::shared_ptr<Storage> storage_;
    std::string images_;
    std::string features_;
};

void check_id(const std::string& id);

}  // namespace sightline::host
