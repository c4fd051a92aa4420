#pragma once
#include <opencv2/core.hpp>

#include <cstddef>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "sightline/features.hpp"

namespace sightline {

// A query keypoint matched to a gallery keypoint; positions are in working-size pixels, so
// verification needs nothing but the candidate.
struct Correspondence {
    cv::Point2f query;
    cv::Point2f gallery;
    float distance = 0;
};

struct Candidate {
    std::string id;
    double score = 0;  // index-specific; higher is better (votes, tf-idf similarity ...)
    std::vector<Correspondence> correspondences;
};

// Concurrent search() calls are safe; add/remove/load are exclusive with each other and must not
// make searches wait for longer than the change itself.
class SIGHTLINE_API Index : public Plugin {
public:
    // Replaces the item if the id exists.
    virtual void add(const std::string& id, const Features& features) = 0;
    virtual bool remove(const std::string& id) = 0;
    // At most k candidates, best first.
    virtual std::vector<Candidate> search(const Features& query, std::size_t k) const = 0;
    virtual std::size_t size() const = 0;
    virtual void save(std::ostream& out) const = 0;
    virtual void load(std::istream& in) = 0;  // replaces the contents

    // For a closer look at one candidate (the pipeline's second look, with the photo rectified into
    // the item's frame): every match of a query feature with a feature of item `id` alone, gallery
    // position and a distance (smaller is closer), however weak; the caller filters them by
    // position. Optional: an index that answers says so with can_match_item() (the pipeline then
    // needs no descriptors of its own for the second look); the default answers nothing.
    virtual bool can_match_item() const { return false; }
    virtual std::vector<Correspondence> match_item(const std::string& /*id*/,
                                                   const Features& /*query*/) const {
        return {};
    }
};

}  // namespace sightline
