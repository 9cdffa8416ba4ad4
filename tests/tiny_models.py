"""Tiny random-weight image-to-video pipelines, built in code and saved with `save_pretrained`, so the
tests load them through the daemon's real `from_pretrained` path without downloading anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def _clip_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    # GPT-2's byte-level alphabet: printable bytes map to themselves, the others above 255.
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _clip_vision(  # type: ignore[no-untyped-def]
        with_projection: bool = True, width: int = 4, size: int = 32, patch: int = 1):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    config = CLIPVisionConfig(hidden_size=width, projection_dim=width, num_hidden_layers=2,
                              num_attention_heads=2, image_size=size, intermediate_size=16, patch_size=patch)
    model = CLIPVisionModelWithProjection(config) if with_projection else CLIPVisionModel(config)
    return model, CLIPImageProcessor(crop_size=32, size=32)


def build_i2vgen_xl(target: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer(target.with_name(f"{target.name}-vocab"))
    unet = I2VGenXLUNet(block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4,
                        out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=4,
                        attention_head_dim=4, num_attention_heads=None, norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
                        latent_channels=4, sample_size=32, norm_num_groups=2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=4, intermediate_size=16, num_attention_heads=2,
        num_hidden_layers=2, pad_token_id=1, vocab_size=len(tokenizer), projection_dim=32))
    image_encoder, feature_extractor = _clip_vision()
    pipe = I2VGenXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            image_encoder=image_encoder, feature_extractor=feature_extractor, unet=unet,
                            scheduler=scheduler)
    pipe.save_pretrained(target)
    return target


def build_svd(target: Path) -> Path:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

    torch.manual_seed(0)
    # Its blocks normalise in 32 groups, so 32 channels is the floor.
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=8, projection_class_embeddings_input_dim=96, addition_time_embed_dim=32)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                                       down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                                       latent_channels=4)
    # SVD resizes the conditioning image to 224 px itself, whatever the processor says.
    image_encoder, feature_extractor = _clip_vision(width=32, size=224, patch=14)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=feature_extractor)
    pipe.save_pretrained(target)
    return target


def _t5_tokenizer():  # type: ignore[no-untyped-def]
    """A T5-style tokenizer (one token a letter, `</s>` at the end), built in code: no hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in "abcdefghijklmnopqrstuvwxyz ":
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def build_wan_i2v(target: Path) -> Path:
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
    )

    torch.manual_seed(0)
    tokenizer, text_encoder = _wan_text()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = _wan_transformer(36, 16, image_dim=4)
    image_encoder, image_processor = _clip_vision(with_projection=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   transformer=transformer, scheduler=scheduler, image_encoder=image_encoder,
                                   image_processor=image_processor)
    pipe.save_pretrained(target)
    return target


def _wan_text():  # type: ignore[no-untyped-def]
    """A UMT5 encoder and the T5-style tokenizer, built in code (diffusers' tests download a tiny T5)."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _t5_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8))
    return tokenizer, text_encoder


def _wan_transformer(channels: int, latents: int, image_dim: int | None = None):  # type: ignore[no-untyped-def]
    """A Wan transformer, `channels` in, `latents` out; Wan 2.2's take no image embeddings (image_dim
    None), Wan 2.1's CLIP image embeddings of `image_dim`."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels,
        out_channels=latents, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim)


def build_wan22_a14b(target: Path) -> Path:
    """Wan 2.2 I2V-A14B's layout: two experts (`transformer` for high noise, `transformer_2` for low),
    the boundary between them at 0.9 of the timesteps, no image encoder, the UniPC flow scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline

    torch.manual_seed(0)
    tokenizer, text_encoder = _wan_text()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0)
    high, low = _wan_transformer(36, 16), _wan_transformer(36, 16)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=high,
                                   transformer_2=low, scheduler=scheduler, boundary_ratio=0.9)
    pipe.save_pretrained(target)
    return target


def _t5_encoder():  # type: ignore[no-untyped-def]
    """The tiny T5 text encoder of diffusers' CogVideoX and LTX tests (weights from the caller's seed)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8))


def build_cogvideox_i2v(target: Path, patch_size_t: int | None = None) -> Path:
    """CogVideoX-I2V as diffusers' own tests build it, with rotary embeddings (learned ones allow one size
    only) and T5's 226-token prompts; `patch_size_t=2` makes it a CogVideoX 1.5."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )
    torch.manual_seed(0)
    text_encoder = _t5_encoder()
    blocks = 4  # 8x spatial, 4x temporal, as the real VAE
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * blocks, up_block_types=("CogVideoXUpBlock3D",) * blocks,
        block_out_channels=(8,) * blocks, latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=16, sample_height=16, sample_frames=9, patch_size=2,
        patch_size_t=patch_size_t, temporal_compression_ratio=4, max_text_seq_length=226,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
    pipe = CogVideoXImageToVideoPipeline(tokenizer=_t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=CogVideoXDPMScheduler())
    pipe.save_pretrained(target)
    return target


def build_ltx_video(target: Path) -> Path:
    """LTX-Video with diffusers' tiny test sizes, but a VAE with patch_size=4 and three time-scaling
    blocks: the real 32x spatial and 8x temporal compression, so frame and size rules are the real ones."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )
    torch.manual_seed(0)
    text_encoder = _t5_encoder()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    pipe = LTXConditionPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                                text_encoder=text_encoder, tokenizer=_t5_tokenizer())
    pipe.save_pretrained(target)
    return target


def build_ltx_draft(target: Path, ltx: Path, seed: int = 1, **changes: Any) -> Path:
    """A distilled checkpoint's folder beside the tiny LTX-Video built into `ltx`, as draft_model loads
    it: its transformer alone, with that model's config (or with `changes`: another architecture) and
    other random weights."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    config = {**LTXVideoTransformer3DModel.load_config(ltx / "transformer"), **changes}
    LTXVideoTransformer3DModel.from_config(config).save_pretrained(target / "transformer")
    return target


def build_ltx_upsampler(target: Path, ltx: Path) -> Path:
    """An LTX-Video latent upsampler saved as Lightricks/ltxv-spatial-upscaler-0.9.7 is (a whole
    LTXLatentUpsamplePipeline: `latent_upsampler/` and `vae/`), with diffusers' tiny test sizes, for the
    tiny model built by build_ltx_video into `ltx` (its VAE, so the latent channels match)."""
    from diffusers import AutoencoderKLLTXVideo, LTXLatentUpsamplePipeline
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    torch.manual_seed(0)
    upsampler = LTXLatentUpsamplerModel(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                        spatial_upsample=True, temporal_upsample=False)
    vae = AutoencoderKLLTXVideo.from_pretrained(ltx / "vae")
    LTXLatentUpsamplePipeline(vae=vae, latent_upsampler=upsampler).save_pretrained(target)
    return target


# Llama 3's pre-tokenizer pattern (its tokenizer.json): with every piece of the prompt template merged
# into one token, the template's system part is 103 tokens with `<image>` at index 5, as the pipeline's
# DEFAULT_PROMPT_TEMPLATE expects (crop_start 103, image_emb_start 5) of the real tokenizer.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _llama3_tokenizer(template: str):  # type: ignore[no-untyped-def]
    """A byte-level BPE trained on the template alone: its words are single tokens, a prompt's other
    words fall back to bytes, so different prompts still give different tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>",
                "<pad>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([template.format("")], trainers.BpeTrainer(
        vocab_size=1000, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    core.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", core.token_to_id(specials[0]))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=specials[0], eos_token="<|eot_id|>",
                                   pad_token="<pad>")


def _llava(tokenizer, image_tokens: int):  # type: ignore[no-untyped-def]
    """A Llava whose vision tower gives `image_tokens` features (a square of patches of one pixel)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    side = round(image_tokens ** 0.5)
    pad, image = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<image>")
    text = LlamaConfig(hidden_size=16, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                       vocab_size=len(tokenizer), pad_token_id=pad, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, max_position_embeddings=2048)
    vision = CLIPVisionConfig(hidden_size=8, intermediate_size=37, projection_dim=32, num_attention_heads=4,
                              num_hidden_layers=2, image_size=side, patch_size=1)
    config = LlavaConfig(vision_config=vision, text_config=text, pad_token_id=pad, image_token_index=image)
    return LlavaForConditionalGeneration(config), CLIPImageProcessor(crop_size=side, size=side)


def build_hunyuan_i2v(target: Path, image_condition: str = "latent_concat") -> Path:
    """HunyuanVideo-I2V with its default prompt template working as on the real model: the 33-channel
    checkpoint's `latent_concat` (no guidance embedding) or the 16-channel `token_replace` (with one)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoImageToVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _llama3_tokenizer(DEFAULT_PROMPT_TEMPLATE["template"])
    text_encoder, image_processor = _llava(tokenizer, DEFAULT_PROMPT_TEMPLATE["image_emb_len"])
    tokenizer_2 = _clip_tokenizer(target.with_name(f"{target.name}-vocab"))
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=8, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, pad_token_id=1, vocab_size=len(tokenizer_2), projection_dim=32))
    concat = image_condition == "latent_concat"
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=2 * 4 + 1 if concat else 4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=not concat, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        image_condition_type=image_condition)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True)
    pipe = HunyuanVideoImageToVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, image_processor=image_processor)
    pipe.save_pretrained(target)
    return target


def build_wan22_ti2v_5b(target: Path) -> Path:
    """Wan 2.2 TI2V-5B's layout: one transformer, timesteps expanded per latent patch, the 16x VAE
    (48 latent channels, residual, 2x2 patches). Indexed as `WanPipeline`, as the published folder is."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline

    torch.manual_seed(0)
    tokenizer, text_encoder = _wan_text()
    vae = AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, dim_mult=[1, 1, 1, 1],
                           num_res_blocks=1, temperal_downsample=[False, True, True], is_residual=True,
                           patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                           latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=5.0)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   transformer=_wan_transformer(48, 48), scheduler=scheduler,
                                   expand_timesteps=True)
    pipe.save_pretrained(target)
    index = target / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "WanPipeline"}, indent=2))
    return target


def _gemma3(tokenizer):  # type: ignore[no-untyped-def]
    """A Gemma 3 text encoder as LTX-2 uses it (every layer's hidden states), with a one-layer vision tower
    of four patches that only prompt enhancement would use; its `<image>` token is added to `tokenizer`."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer.add_tokens(["<image>"], special_tokens=True)
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                            sliding_window=64, max_position_embeddings=2048,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.eos_token_id)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, image_size=8, patch_size=4)
    return Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>")))


def build_ltx2(target: Path) -> Path:
    """LTX-2 image-to-video with diffusers' tiny test sizes, except a video VAE of the real 32x spatial / 8x
    temporal compression (4x4 patches, three spatiotemporal blocks) and a vocoder that upsamples by the mel
    hop (160), so frame, size and soundtrack-length rules are the real ones: 16 kHz stereo as long as the
    clip."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ImageToVideoPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)
    tokenizer = _t5_tokenizer()
    text_encoder = _gemma3(tokenizer)
    text = text_encoder.config.text_config
    width, layers = text.hidden_size, text.num_hidden_layers
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
        qk_norm="rms_norm_across_heads", caption_channels=width, rope_double_precision=False,
        rope_type="split")
    connectors = LTX2TextConnectors(
        caption_channels=width, text_proj_in_factor=layers + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    blocks = 3
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * blocks,
        down_block_types=("LTX2VideoDownBlock3D",) * blocks, decoder_block_out_channels=(8,) * blocks,
        layers_per_block=(1,) * (blocks + 1), decoder_layers_per_block=(1,) * (blocks + 1),
        spatio_temporal_scaling=(True,) * blocks, decoder_spatio_temporal_scaling=(True,) * blocks,
        decoder_inject_noise=(False,) * (blocks + 1), downsample_type=("spatiotemporal",) * blocks,
        upsample_type=("spatiotemporal",) * blocks, upsample_residual=(False,) * blocks,
        upsample_factor=(1,) * blocks, timestep_conditioning=False, patch_size=4, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None,
        in_channels=2, resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height",
        dropout=0.0, mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
        mel_bins=8)
    vocoder = LTX2Vocoder(
        in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[16, 40],
        upsample_factors=[8, 20], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    pipe = LTX2ImageToVideoPipeline(
        transformer=transformer, vae=vae, audio_vae=audio_vae, scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors, vocoder=vocoder)
    pipe.save_pretrained(target)
    return target


# Words the tiny captioner can write (random weights: it writes them in a nonsense order).
CAPTION_WORDS = ["a", "red", "fox", "runs", "in", "the", "snow", "cat", "sits", "on", "green", "grass", "."]


def build_captioner(target: Path, positions: int = 128) -> Path:
    """A tiny random BLIP captioner (the family of Salesforce/blip-image-captioning-base), its processor
    and a word-level BERT vocabulary written in code: AutoModelForImageTextToText loads it. `positions`:
    the longest text it can write (a caption that runs past it fails inside generate)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    torch.manual_seed(0)
    target.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    (target / "vocab.txt").write_text("\n".join(special + CAPTION_WORDS) + "\n")
    tokenizer = BertTokenizer(str(target / "vocab.txt"), bos_token="[DEC]")
    text = {"vocab_size": len(tokenizer), "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "encoder_hidden_size": 8, "max_position_embeddings": positions,
            "bos_token_id": tokenizer.bos_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=8))
    model.save_pretrained(target)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(target)
    return target


def build_florence2(target: Path) -> Path:
    """A tiny random Florence-2 (transformers' native `florence2`, the family of
    florence-community/Florence-2-base): a two-stage DaViT, a one-layer BART, a word-level tokenizer
    with its `<image>` token, and a CLIP image processor telling how many image tokens the 32x32 input
    makes (8x8 → 4x4 patches, plus one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(1)
    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", *CAPTION_WORDS,
             *["describe", "in", "detail", "what", "is", "shown", "image"]]
    vocab = {word: index for index, word in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>",
                                        extra_special_tokens={"image_token": "<image>"})
    vision = Florence2VisionConfig(
        depths=(1, 1), patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1),
        patch_prenorm=(False, True), embed_dim=(8, 16), num_heads=(2, 2), num_groups=(2, 2), window_size=2,
        projection_dim=16, max_position_embeddings=16, max_temporal_embeddings=4)
    text = BartConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, decoder_start_token_id=2, forced_eos_token_id=2)
    model = Florence2ForConditionalGeneration(Florence2Config(text_config=text, vision_config=vision,
                                                              image_token_id=tokenizer.image_token_id))
    model.generation_config.min_new_tokens = 4  # random weights end at once otherwise: a few words first
    model.save_pretrained(target)
    images = CLIPImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    images.image_seq_length = 17
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)
    return target
