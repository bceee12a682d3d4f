// Classify a batch of images with an atld-deploy artifact from C++, through OpenVINO.
//
//   atld_classify ART IMAGES N
//
// ART     an artifact directory written by `atld-deploy export` (reads manifest.json and the pipeline graph)
// IMAGES  a raw file of N images, each uint8 HWC (size x size x channels, as the manifest's `input` says),
//         back to back: what an image decoder gives, already resized to the model's size
// N       how many images the file holds
//
// Prints one JSON line per image: label, class, confidence, p_natural, suspect and the logits, as the Python
// runtime computes them for the pipeline's mode (confidence calibrated and suspect set when the artifact's
// card measured a temperature and a detector threshold).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <openvino/openvino.hpp>

namespace {

struct Contract {
    std::vector<std::string> classes;
    std::size_t size = 0, channels = 0;
    std::string pipeline;  // file name of the IMT pipeline graph inside the artifact
    double temperature = 1.0;  // the card's calibration for the pipeline's mode, else none
    double threshold = -1.0;   // the card's detector threshold, else none (no image is suspect)
};

Contract read_manifest(const std::string& art) {
    std::ifstream file(art + "/manifest.json");
    if (!file) throw std::runtime_error("cannot open " + art + "/manifest.json");
    const nlohmann::json m = nlohmann::json::parse(file);
    Contract c;
    c.classes = m.at("classes").get<std::vector<std::string>>();
    c.size = m.at("input").at("size").get<std::size_t>();
    c.channels = m.at("input").at("channels").get<std::size_t>();
    c.pipeline = m.at("graphs").at("pipeline").at("file").get<std::string>();
    const std::string mode = m.at("imt").at("mode") == "plus" ? "imt-plus" : "imt";
    if (m.contains("calibration")) c.temperature = m.at("calibration").at("temperature").value(mode, 1.0);
    if (m.contains("detector")) c.threshold = m.at("detector").at("threshold").get<double>();
    return c;
}

// uint8 HWC images -> float32 NCHW in [0, 1], the pipeline's `images` input
std::vector<float> to_nchw(const std::vector<std::uint8_t>& hwc, std::size_t n, std::size_t s, std::size_t ch) {
    std::vector<float> out(hwc.size());
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t y = 0; y < s; ++y)
            for (std::size_t x = 0; x < s; ++x)
                for (std::size_t k = 0; k < ch; ++k)
                    out[((i * ch + k) * s + y) * s + x] = hwc[((i * s + y) * s + x) * ch + k] / 255.0f;
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " ART IMAGES N\n";
        return 2;
    }
    try {
        const std::string art = argv[1];
        const std::size_t n = std::stoul(argv[3]);
        const Contract c = read_manifest(art);
        std::ifstream raw(argv[2], std::ios::binary);
        const std::vector<std::uint8_t> hwc((std::istreambuf_iterator<char>(raw)), std::istreambuf_iterator<char>());
        if (n == 0 || hwc.size() != n * c.size * c.size * c.channels)
            throw std::runtime_error(std::string(argv[2]) + " holds " + std::to_string(hwc.size()) + " bytes, not " +
                                     std::to_string(n) + " uint8 images of " + std::to_string(c.size) + "x" +
                                     std::to_string(c.size) + "x" + std::to_string(c.channels));
        std::vector<float> images = to_nchw(hwc, n, c.size, c.channels);

        ov::Core core;
        // f32 explicitly: CPUs with bf16 units would otherwise run the graph in bf16
        ov::CompiledModel model = core.compile_model(art + "/" + c.pipeline, "CPU",
                                                     ov::hint::inference_precision(ov::element::f32));
        ov::InferRequest request = model.create_infer_request();
        request.set_tensor("images", ov::Tensor(ov::element::f32, {n, c.channels, c.size, c.size}, images.data()));
        request.infer();
        const float* logits = request.get_tensor("logits").data<float>();
        const float* p_natural = request.get_tensor("p_natural").data<float>();  // [N]

        const std::size_t k = c.classes.size();
        for (std::size_t i = 0; i < n; ++i) {
            const float* row = logits + i * k;
            const std::size_t label = std::max_element(row, row + k) - row;
            double sum = 0.0;  // softmax of the top class at the calibrated temperature, shifted by the max
            for (std::size_t j = 0; j < k; ++j) sum += std::exp((double(row[j]) - row[label]) / c.temperature);
            nlohmann::json line = {{"label", label}, {"class", c.classes[label]}, {"confidence", 1.0 / sum},
                                   {"p_natural", p_natural[i]}, {"suspect", p_natural[i] < c.threshold},
                                   {"logits", std::vector<float>(row, row + k)}};
            std::cout << line.dump() << "\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
