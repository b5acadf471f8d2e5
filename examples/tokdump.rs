use scalpel::runtime::{LoadOptions, Model};
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(std::path::Path::new(&args[1]), &LoadOptions::default())?;
    let p = model.chat_prompt(&args[2])?;
    println!("{p:?}");
    let ids = model.tokenizer.encode(&p)?;
    println!("{ids:?}");
    for i in &ids {
        print!("{:?} ", model.tokenizer.id_to_token(*i).unwrap());
    }
    println!();
    Ok(())
}
